"""Building inserted blocks, and the container they live in.

Shared by :mod:`._insertion` (blocks between any modules of any backbone)
and :mod:`._placement` (plugins inside ResNet's BasicBlock). The blocks are
those of "Non-local Neural Networks" (https://arxiv.org/abs/1711.07971),
GCNet (https://arxiv.org/abs/1904.11492) and DNL
(https://arxiv.org/abs/2006.06668), or any mmcv plugin layer that keeps the
shape of its input.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, List, Tuple

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_plugin_layer
from mmengine.model import ModuleDict
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import Tensor, nn

from ..registry import MODELS, SCOPE

PROBE_SIZE = 8  # height and width of the shape probe


# helper functions


def unknown_block_type(where: str, type_name: str) -> str:
    """The message for a block ``type`` that no registry knows, with the
    close matches among this package's names and mmcv's."""
    ours = [f'{SCOPE}.{name}' for name in MODELS.names()]
    theirs = sorted(MMENGINE_MODELS._module_dict)
    wanted = type_name.split('.')[-1].lower()
    by_name: Dict[str, List[str]] = {}
    for name in ours + theirs:  # NonLocal2D (ours) and NonLocal2d (mmcv)
        by_name.setdefault(name.split('.')[-1].lower(), []).append(name)
    close = [
        name for match in difflib.get_close_matches(
            wanted, list(by_name), n=3, cutoff=0.6)
        for name in by_name[match]
    ]
    hint = (f" Did you mean {', '.join(repr(c) for c in close)}?"
            if close else '')
    return (f'{where} is {type_name!r}, which is neither a block of this '
            f"package nor one of mmcv's.{hint} This package's names: "
            f"{', '.join(ours)}.")


def check_block_type(where: str, type_name: Any) -> None:
    """Raises ``KeyError`` (as a registry does) for an unknown block type.

    mmcv's ``build_plugin_layer`` would say ``Cannot find None in
    registry``, without the name.
    """
    if not isinstance(type_name, str):
        return  # a class
    with MMENGINE_MODELS.switch_scope_and_registry(None) as registry:
        try:
            found = registry.get(type_name)
        except KeyError:  # this package's scope names its own classes
            found = None
    if found is None:
        raise KeyError(unknown_block_type(where, type_name))


def check_cfg(where: str, cfg: Any) -> dict:
    """A block config: a dict with a ``'type'`` that a registry knows."""
    if not isinstance(cfg, dict):
        raise TypeError(f"{where} must be a dict with a 'type', e.g. "
                        "dict(type='nonlocal_plugin.NonLocal2D'), got "
                        f'{cfg!r}')
    if 'type' not in cfg:
        raise ValueError(f"{where} needs a 'type', e.g. "
                         f"'nonlocal_plugin.NonLocal2D', got {cfg!r}")
    check_block_type(f"{where}['type']", cfg['type'])
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
