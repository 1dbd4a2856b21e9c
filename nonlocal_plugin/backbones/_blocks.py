"""Building inserted blocks, and the container they live in.

Shared by :mod:`._insertion` (blocks between any modules of any backbone)
and :mod:`._placement` (plugins inside ResNet's BasicBlock). The blocks are
those of "Non-local Neural Networks" (https://arxiv.org/abs/1711.07971),
GCNet (https://arxiv.org/abs/1904.11492) and DNL
(https://arxiv.org/abs/2006.06668), or any mmcv plugin layer that keeps the
shape of its input.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Tuple

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_plugin_layer
from mmengine.model import ModuleDict
from torch import Tensor, nn

PROBE_SIZE = 8  # height and width of the shape probe


# helper functions


def check_cfg(where: str, cfg: Any) -> dict:
    """A block config: a dict with a ``'type'``."""
    if not isinstance(cfg, dict):
        raise TypeError(f"{where} must be a dict with a 'type', e.g. "
                        "dict(type='nonlocal_plugin.NonLocal2D'), got "
                        f'{cfg!r}')
    if 'type' not in cfg:
        raise ValueError(f"{where} needs a 'type', e.g. "
                         f"'nonlocal_plugin.NonLocal2D', got {cfg!r}")
    return cfg


def build_block(cfg: dict, in_channels: int) -> Tuple[str, nn.Module]:
    """Builds a block from the registries, as mmcv builds a plugin.

    ``type`` may be scoped (``'nonlocal_plugin.NonLocal2D'``) or one of
    mmcv's names (``'NonLocal2d'``, ``'ContextBlock'``); an optional
    ``postfix`` is appended to the block's ``_abbr_`` to give its name.
    """
    cfg = dict(cfg)
    cfg.pop('in_channels', None)
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


def check_shape(block: nn.Module, channels: int, what: str) -> None:
    """Runs the block once on zeros; it must keep the ``[N, C, H, W]``."""
    param = next(block.parameters(), None)
    x = torch.zeros(1, channels, PROBE_SIZE, PROBE_SIZE,
                    dtype=param.dtype if param is not None else None)
    training = block.training
    block.eval()
    try:
        with torch.no_grad():
            out = block(x)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f'{what} fails on a {list(x.shape)} feature map '
                         f'at build time: {err}') from err
    finally:
        block.train(training)
    shape = list(out.shape) if isinstance(out, Tensor) else type(out)
    if shape != list(x.shape):
        raise ValueError(f'{what} would change the shape: it maps '
                         f'{list(x.shape)} to {shape}; inserted blocks must '
                         'keep the shape of the feature map')


class InsertedBlocks(ModuleDict):
    """The blocks inserted under one parent module, keyed by site and name.

    An mmengine ``ModuleDict`` (a plain ``nn.ModuleDict`` has no
    ``init_weights``, so mmengine would not recurse into it), so the
    backbone's ``init_weights`` reaches the blocks' own ``init_weights``,
    which undo the backbone's Kaiming init of their convs. Blocks named in
    ``frozen`` stay in eval mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frozen: List[str] = []

    def init_weights(self) -> None:
        super().init_weights()
        reset_plain_blocks(self.values())

    def train(self, mode: bool = True) -> InsertedBlocks:
        super().train(mode)
        for key in self.frozen:
            self[key].eval()
        if self.frozen and len(self.frozen) == len(self):
            self.training = False
        return self
