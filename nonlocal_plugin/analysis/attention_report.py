"""``tools/analyze_attention.py``: attention overlays and GCNet's statistic.

For each image, the config's model (loaded from a checkpoint) runs its
tensor-mode forward once on the image as it is (no resize; the config's
preprocessor normalises and pads it) while :class:`.capture.AttentionCapture`
records each block's maps at the query points. Per block it reports GCNet's
query-independence statistic (https://arxiv.org/abs/1904.11492, Sec. 3):
:data:`STATISTIC`.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .capture import AttentionCapture, grid_points, query_independence
from .models import build_model, image_batch, tensor_forward

STATISTIC = (
    'query independence (GCNet): for one block and one image, the Q query '
    'points p_1..p_Q give attention maps a_i over the block\'s key '
    'positions (the weights of its values: NL the softmax row; DNL the '
    'whitened pairwise row plus the unary map; GC its single map); '
    'd = mean over the Q(Q-1)/2 pairs i<j of 1 - <a_i,a_j>/(|a_i||a_j|) '
    '(cosine distance). The value printed averages d over the images. '
    'Near 0: every query attends alike (query-independent); GC is 0 by '
    'construction. "input" is the same mean with the block\'s input '
    'feature vectors x(p_i) in place of a_i, the yardstick of how much the '
    'positions differ before the block.')


@dataclass
class BlockSummary:
    """The statistic of one block, averaged over images."""
    name: str
    kind: str
    attention: Optional[float]
    pairwise: Optional[float]
    features: Optional[float]
    per_image: Dict[str, List[float]] = field(default_factory=dict)


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def parse_points(texts: Sequence[str]) -> List[Tuple[float, float]]:
    """``['x,y', ...]`` to ``[(x, y), ...]`` pixel points."""
    points = []
    for text in texts:
        parts = text.split(',')
        try:
            if len(parts) != 2:
                raise ValueError
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise ValueError(f'--queries takes pixel points as x,y (e.g. '
                             f'40,60), got {text!r}') from None
    return points


def analyze_attention(config: str,
                      checkpoint: str,
                      images: Sequence[str],
                      *,
                      points: Sequence[Tuple[float, float]] | None = None,
                      grid: Tuple[int, int] = (3, 3),
                      out: str | None = None,
                      cfg_options: Dict | None = None
                      ) -> List[BlockSummary]:
    """Captures the blocks' attention on ``images``; writes the overlays.

    Args:
        config (str): An mmdet or mmseg config.
        checkpoint (str): Its trained weights.
        images (Sequence[str]): Image files.
        points (Sequence, optional): ``(x, y)`` query pixels, the same for
            every image. Default: the centres of a ``grid`` of cells.
        grid (tuple): ``(rows, cols)`` of the default queries.
            Default: (3, 3).
        out (str, optional): Folder for ``<image>_attention.png`` and
            ``statistics.json``. Default: nothing written.
        cfg_options (dict, optional): Config overrides.

    Returns:
        list[BlockSummary]: One per captured block, in model order.
    """
    import mmcv
    if not images:
        raise ValueError('give at least one IMAGE')
    for path in images:
        if not osp.isfile(path):
            raise ValueError(f'IMAGE {path!r} is not a file')
    model, codebase = build_model(config, checkpoint, cfg_options)
    stats: Dict[str, Dict[str, list]] = {}
    kinds: Dict[str, str] = {}
    if out is not None:
        os.makedirs(out, exist_ok=True)
    for path in images:
        bgr = mmcv.imread(path, channel_order='bgr')  # [H, W, 3]
        queries = (list(points) if points is not None else grid_points(
            bgr.shape[:2], grid))
        inputs, samples = image_batch(model, codebase, [bgr])
        capture = AttentionCapture(model, queries, tuple(inputs.shape[-2:]))
        if not capture.blocks:
            raise ValueError(f'{config}: the model has no NL, DNL or GC block '
                             'of this package to look at')
        with capture, torch.no_grad():
            tensor_forward(model, codebase, inputs, samples)
        for name, maps in capture.maps.items():
            kinds[name] = maps.kind
            block = query_independence(maps)
            record = stats.setdefault(name, dict(attention=[], pairwise=[],
                                                 features=[]))
            record['attention'] += block.attention
            record['pairwise'] += block.pairwise
            record['features'] += block.features
        if out is not None:
            from .overlay import save_overlay
            stem = osp.splitext(osp.basename(path))[0]
            save_overlay(osp.join(out, f'{stem}_attention.png'),
                         mmcv.bgr2rgb(bgr), capture.maps, queries,
                         tuple(inputs.shape[-2:]))
    summaries = [
        BlockSummary(name, kinds[name], _mean(record['attention']),
                     _mean(record['pairwise']), _mean(record['features']),
                     per_image=record) for name, record in stats.items()
    ]
    if out is not None:
        with open(osp.join(out, 'statistics.json'), 'w') as file:
            json.dump(dict(definition=STATISTIC, config=config,
                           checkpoint=checkpoint, images=list(images),
                           blocks=[s.__dict__ for s in summaries]),
                      file, indent=1)
    return summaries


def format_summaries(summaries: Sequence[BlockSummary]) -> str:
    """The table ``tools/analyze_attention.py`` prints."""

    def cell(value: Optional[float]) -> str:
        return '-' if value is None else f'{value:.4f}'

    rows = [('block', 'kind', 'attention', 'dnl pairwise', 'input')]
    rows += [(s.name, s.kind, cell(s.attention), cell(s.pairwise),
              cell(s.features)) for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ['mean cosine distance between query positions (0: '
             'query-independent); see --help:']
    lines += ['  ' + '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
              for r in rows]
    return '\n'.join(lines)
