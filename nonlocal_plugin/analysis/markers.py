"""Where object queries attend on the toy tasks: on their marker or not.

The toy matching task (:mod:`nonlocal_plugin.datasets.toy_matching`) gives
each gray object the colour of the legend marker of its shape; the cue task
(:mod:`nonlocal_plugin.datasets.toy`) the colour of one bar. For every val
object, with its box centre as the query, :func:`marker_attention` sums each
block's attention row over the key cells of each colour's marker (cells at
least ``min_cover`` covered by that saturated colour) and reports

* ``mass``: the share of the row on the markers of all three colours;
* ``own``: of that, the share on the marker of the object's class (the
  colour its label names); chance is 1/3 on the matching task, and 1 on the
  cue task, whose image has one colour.

It asks whether a block learned the correspondence that GCNet
(https://arxiv.org/abs/1904.11492) found missing in trained NL blocks
(https://arxiv.org/abs/1711.07971) and DNL
(https://arxiv.org/abs/2006.06668) put into its pairwise term. Rows: NL's
softmax rows, DNL's pairwise rows and unary map separately, GC's one map;
blocks whose rows are not weights (``dot_product``, ``concatenation``) are
left out.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
import torch

from ..datasets.toy import CUE_COLOURS
from .capture import AttentionCapture
from .models import build_model, image_batch, tensor_forward

# A pixel is a marker's when its RGB is within this L1 distance of the
# marker colour (the background is gray, objects are gray).
COLOUR_TOLERANCE = 60


def _marker_cells(rgb: np.ndarray, input_shape, key_grid,
                  min_cover: float) -> List[torch.Tensor]:
    """For each colour, a ``[M]`` 0/1 mask of the key cells it covers."""
    height, width = input_shape
    rows, cols = key_grid
    masks = []
    for colour in CUE_COLOURS.values():
        hit = np.abs(rgb.astype(int) - np.array(colour)).sum(-1)
        padded = np.zeros((height, width))  # the network input is padded
        padded[:hit.shape[0], :hit.shape[1]] = hit < COLOUR_TOLERANCE
        cover = padded.reshape(rows, height // rows, cols,
                               width // cols).mean(axis=(1, 3))
        masks.append(torch.tensor(cover.flatten() >= min_cover,
                                  dtype=torch.float32))
    return masks


def _shares(row: torch.Tensor, masks: List[torch.Tensor],
            own: int) -> tuple:
    """(mass on all markers, share of that mass on the own marker)."""
    mass = [float((row * mask).sum()) for mask in masks]
    total = sum(mass)
    return total, (mass[own] / total if total > 0 else float('nan'))


def marker_attention(config: str,
                     checkpoint: Optional[str],
                     data_root: str,
                     *,
                     min_cover: float = 0.15) -> Dict[str, Dict]:
    """Attention of object queries on the markers, per block, over val.

    Args:
        config (str): A toy mmdet config with the package's blocks.
        checkpoint (str, optional): Its trained weights.
        data_root (str): The toy COCO dataset (``annotations/``,
            ``val2017/``).
        min_cover (float): Share of a key cell's pixels that makes it a
            marker's cell. Default: 0.15.

    Returns:
        dict: Block name -> ``kind``, ``objects``, and for ``pairwise`` and
        ``unary`` (where the block has them) the means of ``mass`` and
        ``own``.
    """
    with open(osp.join(data_root, 'annotations',
                       'instances_val2017.json')) as f:
        coco = json.load(f)
    by_image: Dict[int, list] = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    import mmcv
    model, codebase = build_model(config, checkpoint)
    found: Dict[str, Dict] = {}
    for image in coco['images']:
        anns = by_image.get(image['id'], [])
        if not anns:
            continue
        bgr = mmcv.imread(osp.join(data_root, 'val2017',
                                   image['file_name']))
        points = [(a['bbox'][0] + a['bbox'][2] / 2,
                   a['bbox'][1] + a['bbox'][3] / 2) for a in anns]
        inputs, samples = image_batch(model, codebase, [bgr])
        shape = tuple(inputs.shape[-2:])
        capture = AttentionCapture(model, points, shape)
        with capture, torch.no_grad():
            tensor_forward(model, codebase, inputs, samples)
        for name, maps in capture.maps.items():
            block = model.get_submodule(name)
            record = found.setdefault(name, dict(kind=maps.kind, objects=0))
            masks = _marker_cells(bgr[..., ::-1], shape, maps.key_grid,
                                  min_cover)
            record['objects'] += len(anns)
            for q, ann in enumerate(anns):
                own = ann['category_id'] - 1
                parts = dict(unary=maps.unary)
                if getattr(block, 'mode', 'embedded_gaussian') in (
                        'embedded_gaussian', 'gaussian'):
                    parts['pairwise'] = maps.pairwise
                for part, rows in parts.items():
                    if rows is None:
                        continue
                    row = rows[0, q] if part == 'pairwise' else rows[0]
                    mass, share = _shares(row.float(), masks, own)
                    values = record.setdefault(part, dict(mass=[], own=[]))
                    values['mass'].append(mass)
                    values['own'].append(share)
    for record in found.values():
        for part in ('pairwise', 'unary'):
            if part in record:
                record[part] = {
                    k: float(np.nanmean(v)) for k, v in record[part].items()
                }
    return found

