"""The ``'after_add'`` plugin position: after the residual add, before ReLU.

mmdet's and mmseg's ResNet ``plugins`` place a block inside a residual
block, before the add (``after_conv1/2/3``); ``between_blocks`` places one
after the residual block's final ReLU. The official DNL detection code
(https://github.com/Howal/DNL-Object-Detection) and GCNet's "after add"
ablation row put the block in between: after ``out + identity`` and before
that residual block's final ReLU. This module holds the residual-block side
of that position; :mod:`._placement` parses the option and attaches the
blocks.

* :class:`AfterAddMixin` gives a residual block the blocks, their init and
  :meth:`~AfterAddMixin.forward_after_add`.
* :class:`BottleneckAfterAddMixin` re-implements the library Bottleneck's
  forward with the blocks in place; without blocks it computes what the
  library's forward computes. The BasicBlock's forward is
  :class:`~._placement.BasicBlockPluginsMixin`'s.

The blocks are those of "Non-local Neural Networks"
(https://arxiv.org/abs/1711.07971), GCNet (https://arxiv.org/abs/1904.11492)
and DNL (https://arxiv.org/abs/2006.06668).
"""
from __future__ import annotations

from typing import Any, Callable, List

import torch.utils.checkpoint as cp
from torch import Tensor

from ._blocks import build_block, reset_plain_blocks

AFTER_ADD = 'after_add'


# helper functions


def check_block_indices(where: str, blocks: Any, *,
                        none_selects_all: bool = True) -> None:
    """Refuses ``blocks`` unless it is a non-empty tuple of ints (or None,
    where ``none_selects_all``), with a TypeError naming ``where``."""
    if blocks is None and none_selects_all:
        return
    if (not isinstance(blocks, (list, tuple)) or not blocks or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in blocks)):
        every = ' or None (every block)' if none_selects_all else ''
        raise TypeError(
            f'{where} must be a non-empty tuple of residual-block indices '
            f'(ints, python indexing: -1 is the last block){every}, got '
            f'{blocks!r}')


def resolve_blocks(where: str, blocks: Any, count: int, stage: int,
                   *, none_selects_all: bool = True) -> List[int]:
    """The residual blocks that an entry selects in a stage.

    Shared by ``'after_add'``'s ``blocks`` and ``between_blocks``' ``after``.

    Args:
        where (str): The option's name, for messages, e.g.
            ``"plugins[0]['blocks']"``.
        blocks (tuple[int] | None): Python indices of residual blocks
            (``-1`` is the last); None selects every block where
            ``none_selects_all``.
        count (int): Residual blocks in the stage.
        stage (int): The stage's index, for messages.
        none_selects_all (bool): Accept None for every block.
            Default: True.

    Returns:
        list[int]: Non-negative indices, in the order given.
    """
    check_block_indices(where, blocks, none_selects_all=none_selects_all)
    if blocks is None:
        return list(range(count))
    indices = []
    for index in blocks:
        if not -count <= index < count:
            raise ValueError(
                f'{where} has index {index}, out of range for stage {stage} '
                f'(layer{stage + 1}) with {count} residual blocks: use '
                f'{-count} to {count - 1}')
        index %= count
        if index in indices:
            raise ValueError(f'{where} names residual block {index} of '
                             f'stage {stage} twice: {blocks!r}')
        indices.append(index)
    return indices


# main classes


class AfterAddMixin:
    """Blocks after a residual block's add, before its final ReLU.

    Goes before a library residual-block class (or a mixin of one), whose
    forward must call :meth:`forward_after_add` on ``out + identity``. The
    blocks are attributes of the residual block, named as mmdet names its
    plugins (``_abbr_`` plus ``cfg['postfix']``), so their keys read
    ``layer3.4.nonlocal_block`` and ``frozen_stages`` freezes them with
    their stage.

    Args:
        inplanes (int): Input channels, as the residual block.
        planes (int): The residual block's ``planes``; the blocks get
            ``planes * expansion`` channels, its output's.
        **kwargs: The residual block's other arguments.
    """

    def __init__(self, inplanes: int, planes: int, **kwargs) -> None:
        super().__init__(inplanes, planes, **kwargs)
        self.after_add_channels = planes * self.expansion
        self.after_add_names: List[str] = []

    def add_after_add_block(self, cfg: dict) -> str:
        """Builds a block from ``cfg`` and applies it after the ones before.

        Args:
            cfg (dict): The block's config; ``in_channels`` is filled in.

        Returns:
            str: The block's attribute name.
        """
        name, layer = build_block(cfg, self.after_add_channels)
        if hasattr(self, name):
            raise ValueError(
                f'plugin name {name!r} is taken in this residual block; give '
                "plugins of one type distinct cfg['postfix']")
        self.add_module(name, layer)
        self.after_add_names.append(name)
        return name

    def forward_after_add(self, x: Tensor) -> Tensor:
        """Applies the ``'after_add'`` blocks in order, each to the last's
        output."""
        for name in self.after_add_names:
            x = getattr(self, name)(x)
        return x

    def run_residual(self, inner: Callable[[Tensor], Tensor],
                     x: Tensor) -> Tensor:
        """``relu(inner(x))``, ``inner`` checkpointed under ``with_cp``, as
        the library's residual blocks run their ``_inner_forward``."""
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(inner, x, use_reentrant=False)
        else:
            out = inner(x)
        return self.relu(out)

    def init_weights(self) -> None:
        """The residual block's init, then ``reset_plain_blocks`` on the
        ``'after_add'`` blocks (mmcv's ContextBlock has no init_weights)."""
        super().init_weights()
        reset_plain_blocks(
            getattr(self, name) for name in self.after_add_names)


class BottleneckAfterAddMixin(AfterAddMixin):
    """A library Bottleneck (mmdet's or mmseg's) with ``'after_add'`` blocks.

    The forward is the library's: conv1, norm1, ReLU, ``after_conv1``
    plugins, conv2, norm2, ReLU, ``after_conv2`` plugins, conv3, norm3,
    ``after_conv3`` plugins, the residual add; then the ``'after_add'``
    blocks, then the final ReLU. ``with_cp`` checkpoints all but that ReLU,
    as the library does. Plugins run through ``self.forward_plugin``, so the
    package's fix of mmseg's applies.

    Args:
        inplanes (int): Input channels, as the Bottleneck.
        planes (int): As the Bottleneck; the blocks get ``planes * 4``
            channels.
        **kwargs: The Bottleneck's other arguments.
    """

    def forward(self, x: Tensor) -> Tensor:
        """The Bottleneck's forward with the blocks before the final ReLU."""

        def _inner_forward(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(self.conv1(x)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.relu(self.norm2(self.conv2(out)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = self.norm3(self.conv3(out))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv3_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            return self.forward_after_add(out + identity)

        return self.run_residual(_inner_forward, x)
