"""Placement logic shared by the mmdet and mmseg ResNet subclasses.

Two mixins, each combined with a library class in :mod:`.det_resnet` and
:mod:`.seg_resnet`:

* :class:`BetweenBlocksMixin` goes before a ResNet class. It adds the
  ``between_blocks`` option (blocks applied after the final ReLU of chosen
  residual blocks), the ``'after_add'`` plugin position (after the residual
  add, before the final ReLU; :mod:`._after_add`) and lets ``plugins`` reach
  the BasicBlock of depths 18 and 34. ``between_blocks`` is a stage-wise
  spelling of :func:`~._insertion.attach_blocks` (``after='layer3.4'``),
  which keeps ResNet's state-dict keys and stores the blocks in
  ``between_layerN``.
* :class:`BasicBlockPluginsMixin` goes before a BasicBlock class and gives it
  the ``after_conv1``, ``after_conv2`` and ``after_add`` plugin positions.

The blocks are those of "Non-local Neural Networks"
(https://arxiv.org/abs/1711.07971), GCNet (https://arxiv.org/abs/1904.11492)
and DNL (https://arxiv.org/abs/2006.06668).
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from torch import Tensor, nn

from ._after_add import (
    AFTER_ADD,
    AfterAddMixin,
    check_block_indices,
    resolve_blocks,
)
from ._blocks import (
    build_block,
    check_cfg,
    reset_plain_blocks,
)
from ._insertion import attach_blocks

BETWEEN_BLOCKS_KEYS = ('cfg', 'stages', 'after')
PLUGIN_KEYS = ('cfg', 'stages', 'position')
AFTER_ADD_KEYS = PLUGIN_KEYS + ('blocks', )
BASIC_BLOCK_POSITIONS = ('after_conv1', 'after_conv2')


# helper functions


def _check_entry(where: str, entry: Any, allowed: Sequence[str]) -> dict:
    """One entry of ``between_blocks`` or ``plugins``: a dict of known keys."""
    if not isinstance(entry, dict):
        raise TypeError(f'{where} must be a dict with keys {tuple(allowed)}, '
                        f'got {entry!r}')
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(f'{where} has unknown keys {unknown}; allowed keys '
                         f'are {tuple(allowed)}')
    check_cfg(f"{where}['cfg']", entry.get('cfg'))
    return entry


def _check_entries(option: str, value: Any) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f'{option} must be a list of dicts or None, got '
                        f'{value!r}')
    return value


def check_stages(where: str, stages: Any,
                 num_stages: int) -> Tuple[bool, ...]:
    """``stages`` as a tuple of one bool per stage; None selects them all."""
    if stages is None:
        return (True, ) * num_stages
    if (not isinstance(stages, (list, tuple))
            or not all(isinstance(s, bool) for s in stages)):
        raise TypeError(f'{where} must be a tuple of {num_stages} bools (one '
                        f'per stage), got {stages!r}')
    if len(stages) != num_stages:
        raise ValueError(f'{where} must have one bool per stage '
                         f'(num_stages={num_stages}), got {len(stages)}: '
                         f'{stages!r}')
    return tuple(stages)


def check_basic_block_plugins(plugins: Any, num_stages: int) -> None:
    """Checks ResNet's ``plugins`` option for a BasicBlock backbone.

    Args:
        plugins: The option's value (None or a list of dicts).
        num_stages (int): The backbone's number of stages.
    """
    if plugins is None:
        return
    allowed = BASIC_BLOCK_POSITIONS + (AFTER_ADD, )
    for i, plugin in enumerate(_check_entries('plugins', plugins)):
        where = f'plugins[{i}]'
        if isinstance(plugin, dict) and plugin.get('position') == AFTER_ADD:
            continue  # check_after_add_plugins checks these
        _check_entry(where, plugin, PLUGIN_KEYS)
        check_stages(f"{where}['stages']", plugin.get('stages'), num_stages)
        position = plugin.get('position')
        if position not in BASIC_BLOCK_POSITIONS:
            raise ValueError(
                f"{where}['position'] must be one of {allowed} for the "
                'BasicBlock of depths 18 and 34 (it has two convs), got '
                f'{position!r}')


def check_after_add_plugins(plugins: Any, stage_blocks: Sequence[int],
                            num_stages: int) -> None:
    """Checks the ``'after_add'`` entries of ResNet's ``plugins`` option.

    Entries at other positions are the library's to check, except that
    ``blocks`` is refused there.

    Args:
        plugins: The option's value (None or a list of dicts).
        stage_blocks (Sequence[int]): Residual blocks in each stage.
        num_stages (int): The backbone's number of stages.
    """
    if plugins is None:
        return
    for i, plugin in enumerate(_check_entries('plugins', plugins)):
        where = f'plugins[{i}]'
        if not isinstance(plugin, dict):
            continue
        if plugin.get('position') != AFTER_ADD:
            if 'blocks' in plugin:
                raise ValueError(
                    f"{where} has the key 'blocks', which only position "
                    f"{AFTER_ADD!r} takes; got position "
                    f"{plugin.get('position')!r}")
            continue
        _check_entry(where, plugin, AFTER_ADD_KEYS)
        stages = check_stages(f"{where}['stages']", plugin.get('stages'),
                              num_stages)
        for stage, (selected, count) in enumerate(zip(stages, stage_blocks)):
            if selected:
                resolve_blocks(f"{where}['blocks']", plugin.get('blocks'),
                               count, stage)


def parse_between_blocks(between_blocks: Any,
                         stage_blocks: Sequence[int]) -> List[list]:
    """Validates ``between_blocks`` and sorts its blocks by stage.

    Args:
        between_blocks (list[dict] | None): The option's value.
        stage_blocks (Sequence[int]): Residual blocks in each stage.

    Returns:
        list[list[tuple[int, dict]]]: For each stage, the ``(block index,
        cfg)`` pairs in the order they apply, with non-negative indices.
    """
    num_stages = len(stage_blocks)
    plan = [[] for _ in stage_blocks]
    if between_blocks is None:
        return plan
    for i, entry in enumerate(
            _check_entries('between_blocks', between_blocks)):
        where = f'between_blocks[{i}]'
        _check_entry(where, entry, BETWEEN_BLOCKS_KEYS)
        stages = check_stages(f"{where}['stages']", entry.get('stages'),
                              num_stages)
        check_block_indices(f"{where}['after']", entry.get('after'),
                            none_selects_all=False)
        for stage, selected in enumerate(stages):
            if not selected:
                continue
            indices = resolve_blocks(f"{where}['after']", entry.get('after'),
                                     stage_blocks[stage], stage,
                                     none_selects_all=False)
            plan[stage].extend((index, entry['cfg']) for index in indices)
    for pairs in plan:  # a stable sort: list order within one block
        pairs.sort(key=lambda pair: pair[0])
    return plan


# main classes


class BasicBlockPluginsMixin(AfterAddMixin):
    """Plugins for a ResNet BasicBlock, placed before the library's class.

    Args:
        inplanes (int): Input channels, as the BasicBlock.
        planes (int): Output channels, as the BasicBlock.
        plugins (list[dict], optional): ``dict(cfg=..., position=...)``
            entries. ``'after_conv1'`` applies after conv1, norm1 and ReLU;
            ``'after_conv2'`` after conv2 and norm2, before the residual add
            (where Bottleneck's ``'after_conv3'`` is). Plugins at one position
            apply in list order, each to the previous one's output. Two
            plugins of one type need distinct ``cfg['postfix']``. The
            ``'after_add'`` blocks are not given here: the ResNet adds them
            with :meth:`~._after_add.AfterAddMixin.add_after_add_block`.
            Default: None.
        **kwargs: The library BasicBlock's other arguments.
    """

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 *,
                 plugins: List[dict] | None = None,
                 **kwargs) -> None:
        super().__init__(inplanes, planes, plugins=None, **kwargs)
        entries = [] if plugins is None else _check_entries(
            'plugins', plugins)
        for i, plugin in enumerate(entries):
            where = f'plugins[{i}]'
            _check_entry(where, plugin, PLUGIN_KEYS)
            if plugin.get('position') not in BASIC_BLOCK_POSITIONS:
                raise ValueError(
                    f"{where}['position'] must be one of "
                    f'{BASIC_BLOCK_POSITIONS} for a BasicBlock, got '
                    f"{plugin.get('position')!r}")
        self.plugins = plugins
        self.with_plugins = bool(entries)
        for position in BASIC_BLOCK_POSITIONS:
            names = []
            for plugin in entries:
                if plugin['position'] != position:
                    continue
                name, layer = build_block(plugin['cfg'], planes)
                if hasattr(self, name):
                    raise ValueError(
                        f'plugin name {name!r} is taken in this BasicBlock; '
                        "give plugins of one type distinct cfg['postfix']")
                self.add_module(name, layer)
                names.append(name)
            setattr(self, f'{position}_plugin_names', names)

    def init_weights(self) -> None:
        """The BasicBlock's init (and the ``'after_add'`` blocks'), then
        ``reset_plain_blocks`` on plugins."""
        super().init_weights()
        reset_plain_blocks(
            getattr(self, name)
            for position in BASIC_BLOCK_POSITIONS
            for name in getattr(self, f'{position}_plugin_names'))

    def forward_plugin(self, x: Tensor, plugin_names: List[str]) -> Tensor:
        """Applies the named plugins in order, each to the last's output."""
        for name in plugin_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """The BasicBlock's forward with the plugins at their positions and
        the ``'after_add'`` blocks before the final ReLU."""

        def _inner_forward(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.norm2(self.conv2(out))
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            return self.forward_after_add(out + identity)

        return self.run_residual(_inner_forward, x)


class BetweenBlocksMixin:
    """Adds ``between_blocks``, ``'after_add'`` and BasicBlock plugins.

    Goes before a ResNet class. The subclass sets ``_basic_block`` and
    ``_bottleneck`` (its library's residual blocks),
    ``_plugin_basic_block`` (the BasicBlock with
    :class:`BasicBlockPluginsMixin`) and ``_after_add_bottleneck`` (the
    Bottleneck with :class:`~._after_add.BottleneckAfterAddMixin`).

    Args:
        depth (int): As the parent ResNet.
        between_blocks (list[dict], optional): Blocks to insert after chosen
            residual blocks, after their final ReLU. Each entry is
            ``dict(cfg=..., stages=..., after=...)``:

            - cfg (dict): The block's config, e.g.
              ``dict(type='nonlocal_plugin.NonLocal2D')`` or mmcv's
              ``dict(type='ContextBlock', ratio=1 / 16)``; ``in_channels``
              is filled in with the stage's output channels. An optional
              ``postfix`` is appended to the block's name.
            - stages (tuple[bool], optional): One bool per stage. Default:
              every stage.
            - after (tuple[int]): Indices of the residual blocks in each
              selected stage, python-style: ``-2`` is the last-but-one block.

            Blocks after the same residual block apply in list order. A
            stage that ``frozen_stages`` freezes freezes its blocks too.
            ``dict(cfg=c, stages=(False, False, True, False), after=(-2, ))``
            is ``nonlocal_plugin.InsertBlocks``'s ``dict(cfg=c,
            after='layer3.-2')``, with the same keys. Default: None.
        plugins (list[dict], optional): As the parent ResNet, whose
            positions (``'after_conv1'``, ``'after_conv2'``,
            ``'after_conv3'``) keep its behaviour; for depths 18 and 34 the
            positions are ``'after_conv1'`` and ``'after_conv2'``. Every
            depth also takes ``position='after_add'``: after the residual
            add, before the residual block's final ReLU (the official DNL
            detection code's and GCNet's "after add" place). Such an entry
            is ``dict(cfg=..., stages=..., position='after_add',
            blocks=...)``; ``blocks`` (only at this position) gives python
            indices of the residual blocks in each selected stage (Default:
            every block). The block gets the residual block's output
            channels and is its attribute (``layer3.4.nonlocal_block``).
            Blocks at one residual block apply in list order; two of one
            type need distinct ``cfg['postfix']``. Default: None.
        **kwargs: The parent ResNet's other arguments.
    """

    _basic_block: type
    _plugin_basic_block: type
    _bottleneck: type
    _after_add_bottleneck: type

    def __init__(self,
                 depth: int,
                 *,
                 between_blocks: List[dict] | None = None,
                 plugins: List[dict] | None = None,
                 **kwargs) -> None:
        if depth in self.arch_settings:  # else the parent's KeyError
            block, stage_blocks = self.arch_settings[depth]
            num_stages = kwargs.get('num_stages', 4)
            check_after_add_plugins(plugins, stage_blocks[:num_stages],
                                    num_stages)
            if block is self._basic_block:
                check_basic_block_plugins(plugins, num_stages)
        super().__init__(depth=depth, plugins=plugins, **kwargs)
        plan = parse_between_blocks(between_blocks, self.stage_blocks)
        self.between_blocks = between_blocks
        entries = [
            dict(cfg=cfg, after=f'{self.res_layers[stage]}.{index}')
            for stage, pairs in enumerate(plan) for index, cfg in pairs
        ]
        attach_blocks(self, entries, with_cp=self.with_cp,
                      option='between_blocks')

    def make_res_layer(self, **kwargs) -> nn.Module:
        """The parent's ``ResLayer``, with the stage's ``'after_add'``
        blocks attached and a BasicBlock that takes plugins."""
        plugins = kwargs.get('plugins') or []
        after_add = [p for p in plugins if p.get('position') == AFTER_ADD]
        if after_add:
            kwargs['plugins'] = [
                p for p in plugins if p.get('position') != AFTER_ADD
            ]
            if kwargs.get('block') is self._bottleneck:
                kwargs['block'] = self._after_add_bottleneck
        if (kwargs.get('block') is self._basic_block
                and kwargs.get('plugins') is not None):
            if kwargs['plugins'] or after_add:
                kwargs['block'] = self._plugin_basic_block
            if not kwargs['plugins']:  # no plugin inside the BasicBlock
                kwargs['plugins'] = None
        if after_add and not issubclass(kwargs['block'], AfterAddMixin):
            raise ValueError(
                f"plugins position {AFTER_ADD!r} needs mmdet's or mmseg's "
                f"BasicBlock or Bottleneck, not {kwargs['block'].__name__}")
        layer = super().make_res_layer(**kwargs)
        stage = len(self.res_layers)  # the parent appends after this call
        for plugin in after_add:
            for index in resolve_blocks("plugins[...]['blocks']",
                                        plugin.get('blocks'), len(layer),
                                        stage):
                layer[index].add_after_add_block(plugin['cfg'])
        return layer
