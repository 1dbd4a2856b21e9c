"""Params and FLOPs of a config's model, with a per-block breakdown.

What ``tools/get_flops.py`` prints. The model's tensor-mode forward (as
mmdet's and mmseg's own ``get_flops.py`` trace it) runs on one random image
of the given size, padded by the config's data preprocessor; counting is
:mod:`.flops`' (mmengine's ``FlopAnalyzer`` plus handles for the blocks).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch

from .flops import CONVENTION, flop_analyzer, parameters, share
from .models import attention_blocks, build_model, dummy_batch, tensor_forward


@dataclass
class BlockCost:
    """One attention block: its name in the model, class, params, flops."""
    name: str
    kind: str
    params: int
    flops: int
    in_backbone: bool


@dataclass
class Complexity:
    """Whole-model and per-block counts at one input shape."""
    config: str
    shape: Tuple[int, int]
    padded: Tuple[int, int]
    params: int
    flops: int
    backbone_params: int
    backbone_flops: int
    blocks: List[BlockCost] = field(default_factory=list)
    uncounted: Dict[str, int] = field(default_factory=dict)


def complexity(config: str,
               shape: Sequence[int] = (800, 1333),
               cfg_options: Dict | None = None) -> Complexity:
    """Counts a config's model at an input of ``shape`` (H, W).

    Args:
        config (str): An mmdet or mmseg config file.
        shape (Sequence[int]): Input height and width before padding.
            Default: (800, 1333).
        cfg_options (dict, optional): Config overrides.

    Returns:
        Complexity: The counts.
    """
    if len(shape) != 2 or any(int(s) <= 0 for s in shape):
        raise ValueError(f'--shape must be two positive sizes H W, got '
                         f'{list(shape)}')
    model, codebase = build_model(config, cfg_options=cfg_options)
    inputs, samples = dummy_batch(model, codebase, shape)
    model.forward = functools.partial(tensor_forward, model, codebase,
                                      samples=samples)
    with torch.no_grad():
        analyzer = flop_analyzer(model, (inputs, ))
        by_module = analyzer.by_module()
    backbone = getattr(model, 'backbone', None)
    result = Complexity(
        config=config,
        shape=(int(shape[0]), int(shape[1])),
        padded=tuple(inputs.shape[-2:]),
        params=parameters(model),
        flops=int(by_module['']),
        backbone_params=parameters(backbone) if backbone is not None else 0,
        backbone_flops=int(by_module.get('backbone', 0)),
        uncounted=dict(analyzer.unsupported_ops()))
    for name, block in attention_blocks(model):
        result.blocks.append(
            BlockCost(name, type(block).__name__, parameters(block),
                      int(by_module.get(name, 0)),
                      name.startswith('backbone.')))
    return result


def _giga(count: float) -> str:
    if count < 1e8:
        return f'{count / 1e6:.3f} M'
    return f'{count / 1e9:.3f} G'


def _mega(count: float) -> str:
    return f'{count / 1e6:.3f} M'


def format_complexity(result: Complexity) -> str:
    """The report ``tools/get_flops.py`` prints."""
    height, width = result.shape
    lines = [
        f'config: {result.config}',
        f'input: 1x3x{height}x{width}, padded by the data preprocessor to '
        f'{result.padded[0]}x{result.padded[1]}',
        f'convention: {CONVENTION}',
        f'model:    params {_mega(result.params)}   flops '
        f'{_giga(result.flops)} ({result.flops})',
        f'backbone: params {_mega(result.backbone_params)}   flops '
        f'{_giga(result.backbone_flops)} ({result.backbone_flops})',
    ]
    if result.blocks:
        lines.append('attention blocks (share: of the backbone, or of the '
                     'model for a block outside it):')
        header = ('block', 'type', 'params', 'params share', 'flops',
                  'flops share', 'flops (exact)')
        rows = [header]
        for block in result.blocks:
            params_whole, flops_whole = (
                (result.backbone_params, result.backbone_flops)
                if block.in_backbone else (result.params, result.flops))
            rows.append((block.name, block.kind, _mega(block.params),
                         share(block.params, params_whole),
                         _giga(block.flops), share(block.flops, flops_whole),
                         str(block.flops)))
        widths = [max(len(row[i]) for row in rows) for i in range(7)]
        for row in rows:
            lines.append('  ' + '  '.join(
                cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        total = sum(b.flops for b in result.blocks)
        lines.append(f'  all blocks: params '
                     f'{_mega(sum(b.params for b in result.blocks))}   '
                     f'flops {_giga(total)} ({total})')
    else:
        lines.append('attention blocks: none')
    if result.uncounted:
        ops = sorted(result.uncounted.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append('not counted (no handle; elementwise ops count 0 by the '
                     'convention): ' +
                     ', '.join(f'{op} x{n}' for op, n in ops))
    return '\n'.join(lines)
