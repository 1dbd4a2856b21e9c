"""Placement logic shared by the mmdet and mmseg ResNet subclasses.

Two mixins, each combined with a library class in :mod:`.resnet`:

* :class:`BetweenBlocksMixin` goes before a ResNet class. It adds the
  ``between_blocks`` option (blocks applied after the residual add of chosen
  residual blocks, stored outside the ``layerN`` Sequentials so ResNet's
  state-dict keys keep their numbering) and lets ``plugins`` reach the
  BasicBlock of depths 18 and 34.
* :class:`BasicBlockPluginsMixin` goes before a BasicBlock class and gives it
  the ``after_conv1`` and ``after_conv2`` plugin positions.
"""
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import torch.utils.checkpoint as cp
from mmcv.cnn import build_plugin_layer
from mmengine.model import ModuleDict
from torch import Tensor, nn

BETWEEN_BLOCKS_KEYS = ('cfg', 'stages', 'after')
PLUGIN_KEYS = ('cfg', 'stages', 'position')
BASIC_BLOCK_POSITIONS = ('after_conv1', 'after_conv2')


# helper functions


def _check_cfg(where: str, cfg: Any) -> dict:
    """A block config: a dict with a ``'type'``."""
    if not isinstance(cfg, dict):
        raise TypeError(f"{where} must be a dict with a 'type', e.g. "
                        "dict(type='nonlocal_plugin.NonLocal2D'), got "
                        f'{cfg!r}')
    if 'type' not in cfg:
        raise ValueError(f"{where} needs a 'type', e.g. "
                         f"'nonlocal_plugin.NonLocal2D', got {cfg!r}")
    return cfg


def _check_entry(where: str, entry: Any, allowed: Sequence[str]) -> dict:
    """One entry of ``between_blocks`` or ``plugins``: a dict of known keys."""
    if not isinstance(entry, dict):
        raise TypeError(f'{where} must be a dict with keys {tuple(allowed)}, '
                        f'got {entry!r}')
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(f'{where} has unknown keys {unknown}; allowed keys '
                         f'are {tuple(allowed)}')
    _check_cfg(f"{where}['cfg']", entry.get('cfg'))
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
    for i, plugin in enumerate(_check_entries('plugins', plugins)):
        where = f'plugins[{i}]'
        _check_entry(where, plugin, PLUGIN_KEYS)
        check_stages(f"{where}['stages']", plugin.get('stages'), num_stages)
        position = plugin.get('position')
        if position not in BASIC_BLOCK_POSITIONS:
            raise ValueError(
                f"{where}['position'] must be one of {BASIC_BLOCK_POSITIONS} "
                'for the BasicBlock of depths 18 and 34 (it has two convs), '
                f'got {position!r}')


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
        after = entry.get('after')
        if (not isinstance(after, (list, tuple)) or not after or not all(
                isinstance(a, int) and not isinstance(a, bool)
                for a in after)):
            raise TypeError(
                f"{where}['after'] must be a non-empty tuple of residual-"
                'block indices (ints, python indexing: -1 is the last '
                f'block), got {after!r}')
        for stage, selected in enumerate(stages):
            if not selected:
                continue
            count = stage_blocks[stage]
            indices = []
            for index in after:
                if not -count <= index < count:
                    raise ValueError(
                        f"{where}['after'] has index {index}, out of range "
                        f'for stage {stage} (layer{stage + 1}) with {count} '
                        f'residual blocks: use {-count} to {count - 1}')
                index %= count
                if index in indices:
                    raise ValueError(
                        f"{where}['after'] names residual block {index} of "
                        f'stage {stage} twice: {after!r}')
                indices.append(index)
            plan[stage].extend((index, entry['cfg']) for index in indices)
    for pairs in plan:  # a stable sort: list order within one block
        pairs.sort(key=lambda pair: pair[0])
    return plan


def build_block(cfg: dict, in_channels: int) -> Tuple[str, nn.Module]:
    """Builds a block from the registries, as mmcv builds a plugin.

    ``type`` may be scoped (``'nonlocal_plugin.NonLocal2D'``) or one of
    mmcv's names (``'NonLocal2d'``, ``'ContextBlock'``); an optional
    ``postfix`` is appended to the block's ``_abbr_`` to give its name.
    """
    cfg = dict(cfg)
    postfix = cfg.pop('postfix', '')
    return build_plugin_layer(cfg, postfix=postfix, in_channels=in_channels)


def run_block(block: nn.Module, x: Tensor, with_cp: bool) -> Tensor:
    """``block(x)``, under activation checkpointing when ``with_cp``."""
    if with_cp and x.requires_grad:
        return cp.checkpoint(block, x, use_reentrant=False)
    return block(x)


def reset_plain_blocks(blocks: Iterable[nn.Module]) -> None:
    """Re-initialises blocks that mmengine's ``init_weights`` skips.

    mmengine calls ``init_weights`` only on children that have one, after
    the backbone's Kaiming init of every conv. mmcv's ``ContextBlock`` has
    only ``reset_parameters`` (which zeroes its last convs); without this it
    would keep the Kaiming init and not start as the identity.
    """
    for block in blocks:
        if (not hasattr(block, 'init_weights')
                and hasattr(block, 'reset_parameters')):
            block.reset_parameters()


class InsertedBlocks(ModuleDict):
    """The blocks inserted into one stage, keyed by ``after{i}_{name}``.

    An mmengine ``ModuleDict`` (a plain ``nn.ModuleDict`` has no
    ``init_weights``, so mmengine would not recurse into it), so the
    backbone's ``init_weights`` reaches the blocks' own ``init_weights``,
    which undo the backbone's Kaiming init of their convs.
    """

    def init_weights(self) -> None:
        super().init_weights()
        reset_plain_blocks(self.values())


# main classes


class BasicBlockPluginsMixin:
    """Plugins for a ResNet BasicBlock, placed before the library's class.

    Args:
        inplanes (int): Input channels, as the BasicBlock.
        planes (int): Output channels, as the BasicBlock.
        plugins (list[dict], optional): ``dict(cfg=..., position=...)``
            entries. ``'after_conv1'`` applies after conv1, norm1 and ReLU;
            ``'after_conv2'`` after conv2 and norm2, before the residual add
            (where Bottleneck's ``'after_conv3'`` is). Plugins at one position
            apply in list order, each to the previous one's output. Two
            plugins of one type need distinct ``cfg['postfix']``.
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
        """The BasicBlock's init, then ``reset_plain_blocks`` on plugins."""
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
        """The BasicBlock's forward with the plugins at their positions."""

        def _inner_forward(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.norm2(self.conv2(out))
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


class BetweenBlocksMixin:
    """Adds ``between_blocks`` and BasicBlock plugins to a ResNet class.

    The subclass sets ``_basic_block`` (its library's BasicBlock) and
    ``_plugin_basic_block`` (that class with :class:`BasicBlockPluginsMixin`).

    Args:
        depth (int): As the parent ResNet.
        between_blocks (list[dict], optional): Blocks to insert after the
            residual add of chosen residual blocks. Each entry is
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
            Default: None.
        plugins (list[dict], optional): As the parent ResNet; for depths 18
            and 34 the positions are ``'after_conv1'`` and
            ``'after_conv2'``. Default: None.
        **kwargs: The parent ResNet's other arguments.
    """

    _basic_block: type
    _plugin_basic_block: type

    def __init__(self,
                 depth: int,
                 *,
                 between_blocks: List[dict] | None = None,
                 plugins: List[dict] | None = None,
                 **kwargs) -> None:
        block = self.arch_settings.get(depth, (None, ))[0]
        if block is self._basic_block:
            check_basic_block_plugins(plugins, kwargs.get('num_stages', 4))
        super().__init__(depth=depth, plugins=plugins, **kwargs)
        plan = parse_between_blocks(between_blocks, self.stage_blocks)
        self.between_blocks = between_blocks
        self.between_layers: List[str | None] = []
        self.between_block_names: List[Dict[int, List[str]]] = []
        for stage, pairs in enumerate(plan):
            channels = self.base_channels * 2**stage * self.block.expansion
            blocks = InsertedBlocks()
            names: Dict[int, List[str]] = {}
            for index, cfg in pairs:
                name, layer = build_block(cfg, channels)
                key = f'after{index}_{name}'
                if key in blocks:
                    raise ValueError(
                        f'between_blocks puts two blocks named {name!r} '
                        f'after residual block {index} of stage {stage}; '
                        "give them distinct cfg['postfix']")
                blocks[key] = layer
                names.setdefault(index, []).append(key)
            layer_name = None
            if pairs:
                layer_name = f'between_{self.res_layers[stage]}'
                self.add_module(layer_name, blocks)
            self.between_layers.append(layer_name)
            self.between_block_names.append(names)
        self._freeze_stages()

    def make_res_layer(self, **kwargs) -> nn.Module:
        """The parent's ``ResLayer``, with a BasicBlock that takes plugins."""
        if (kwargs.get('block') is self._basic_block
                and kwargs.get('plugins') is not None):
            if kwargs['plugins']:
                kwargs['block'] = self._plugin_basic_block
            else:  # a stage that no plugin selected
                kwargs['plugins'] = None
        return super().make_res_layer(**kwargs)

    def _freeze_stages(self) -> None:
        """The parent's freezing, extended to the blocks of frozen stages."""
        super()._freeze_stages()
        between_layers = getattr(self, 'between_layers', ())
        for layer_name in between_layers[:max(self.frozen_stages, 0)]:
            if layer_name is not None:
                blocks = getattr(self, layer_name)
                blocks.eval()
                for param in blocks.parameters():
                    param.requires_grad = False

    def _forward_stem(self, x: Tensor) -> Tensor:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        return self.maxpool(x)

    def _forward_stage(self, stage: int, x: Tensor) -> Tensor:
        res_layer = getattr(self, self.res_layers[stage])
        layer_name = self.between_layers[stage]
        if layer_name is None:
            return res_layer(x)
        blocks = getattr(self, layer_name)
        names = self.between_block_names[stage]
        for index, res_block in enumerate(res_layer):
            x = res_block(x)
            for key in names.get(index, ()):
                x = run_block(blocks[key], x, self.with_cp)
        return x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The parent's forward with the inserted blocks applied."""
        x = self._forward_stem(x)  # [N, C, H / 4, W / 4]
        outs = []
        for stage in range(len(self.res_layers)):
            x = self._forward_stage(stage, x)
            if stage in self.out_indices:
                outs.append(x)
        return tuple(outs)
