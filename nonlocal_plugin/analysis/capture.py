"""What the blocks attend to: attention rows of chosen queries, per block.

Non-local blocks (https://arxiv.org/abs/1711.07971) weigh every key
position for every query; GCNet (https://arxiv.org/abs/1904.11492) found
that in trained NL blocks those maps are nearly the same for every query,
and pools with one query-independent map; DNL
(https://arxiv.org/abs/2006.06668) splits the map into a whitened pairwise
part and a unary (query-independent) part.

:class:`AttentionCapture` records, while it is active, each block's maps:

* NL: the rows of the chosen queries, computed from the block's own query
  and key rows by :func:`~nonlocal_plugin.ops.rows.attention_rows`
  (``O(Q x M)``; nothing ``N x M``);
* DNL (mmseg's and the detection code's block): the whitened pairwise rows
  and the unary map, separately (the detection block's gate ``gamma`` is
  not applied to the rows);
* GC: its single map (the softmax of ``conv_mask``; uniform for ``avg``).

Capturing uses forward hooks that exist only inside the ``with`` block, so
outside it the blocks run exactly as without this module. Inside it, each
block's projections run a second time, in the hook, under ``no_grad``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..blocks import (
    ContextBlock,
    DisentangledNonLocal,
    DisentangledNonLocalDet2D,
    NonLocalNd,
)
from ..ops.rows import attention_rows, cosine_distance_mean


@dataclass
class BlockMaps:
    """The maps of one block for one batch.

    Attributes:
        name (str): The block's name in the model.
        kind (str): ``'nl'``, ``'dnl'`` or ``'gc'``.
        grid (tuple): ``(h, w)`` of the block's input (query positions).
        key_grid (tuple): ``(h, w)`` of its key positions (halved when it
            sub-samples).
        index (Tensor): ``[Q]`` query positions on ``grid``.
        pairwise (Tensor, optional): ``[B, Q, M]`` query rows (NL; DNL's
            whitened pairwise part).
        unary (Tensor, optional): ``[B, M]`` the query-independent map (GC;
            DNL's unary part).
        features (Tensor): ``[B, Q, C]`` the block's input at the queries.
    """
    name: str
    kind: str
    grid: Tuple[int, int]
    key_grid: Tuple[int, int]
    index: Tensor
    pairwise: Optional[Tensor] = None
    unary: Optional[Tensor] = None
    features: Optional[Tensor] = None

    def query_rows(self) -> Tensor:
        """``[B, Q, M]``: each query's whole map (DNL: pairwise + unary,
        the weights its values get; GC: the one map for every query)."""
        if self.pairwise is None:
            return self.unary[:, None].expand(-1, self.index.numel(), -1)
        if self.unary is None:
            return self.pairwise
        return self.pairwise + self.unary[:, None]


@dataclass
class Statistics:
    """GCNet's query-independence statistic of one block, per image."""
    attention: List[float] = field(default_factory=list)
    pairwise: List[float] = field(default_factory=list)
    features: List[float] = field(default_factory=list)


# helper functions


def grid_index(points: Sequence[Tuple[float, float]],
               image_shape: Tuple[int, int],
               grid: Tuple[int, int]) -> Tensor:
    """Positions on a feature ``grid`` of pixel ``points`` (x, y).

    Args:
        points (Sequence): ``(x, y)`` pixel coordinates in the (padded)
            network input of ``image_shape`` (H, W).
        image_shape (tuple): ``(H, W)`` of the network input.
        grid (tuple): ``(h, w)`` of the feature map.

    Returns:
        Tensor: ``[Q]`` flat positions ``row * w + col``.
    """
    height, width = image_shape
    rows, cols = grid
    index = []
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f'--queries: point ({x}, {y}) lies outside the '
                             f'{width}x{height} input')
        index.append(int(y * rows / height) * cols + int(x * cols / width))
    return torch.tensor(index, dtype=torch.long)


def grid_points(image_shape: Tuple[int, int],
                grid: Tuple[int, int] = (3, 3)) -> List[Tuple[float, float]]:
    """``(x, y)`` centres of a ``rows x cols`` grid of cells over an image
    of ``image_shape`` (H, W): the default queries."""
    rows, cols = (int(g) for g in grid)
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError('--grid must be two positive counts giving at least '
                         f'2 queries, got {list(grid)}')
    height, width = image_shape
    return [((c + 0.5) * width / cols, (r + 0.5) * height / rows)
            for r in range(rows) for c in range(cols)]


def _key_grid(grid: Tuple[int, int], num_keys: int) -> Tuple[int, int]:
    if grid[0] * grid[1] == num_keys:
        return grid
    return grid[0] // 2, grid[1] // 2  # the 2x sub-sampling max-pool


def _nonlocal_maps(block: NonLocalNd, x: Tensor, index: Tensor,
                   maps: BlockMaps) -> None:
    query, key, _ = block.embed(x)  # [B, N, C'], [B, M, C'] or None
    num_keys = None
    if query is not None:
        if isinstance(block, DisentangledNonLocal):
            # DNL's whitening, as in DisentangledNonLocal.aggregate.
            query = query - query.mean(dim=1, keepdim=True)  # [B, N, C']
            key = key - key.mean(dim=1, keepdim=True)  # [B, M, C']
        weight = (block.concat_project.conv.weight.flatten()
                  if block.mode == 'concatenation' else None)
        maps.pairwise = attention_rows(
            query, key, index, mode=block.mode, scale=block.logit_scale(),
            concat_weight=weight)  # [B, Q, M]
        num_keys = key.shape[1]
    if getattr(block, 'use_unary', False):
        logits = block.mask_pool(block.conv_mask(x)).flatten(1)  # [B, M]
        maps.unary = logits.float().softmax(dim=-1)
        num_keys = logits.shape[1]
    maps.key_grid = _key_grid(maps.grid, num_keys)


def _dnl_det_maps(block: DisentangledNonLocalDet2D, x: Tensor, index: Tensor,
                  maps: BlockMaps) -> None:
    source = x if block.downsample is None else block.downsample(x)
    query, key, _ = block.embed(x, source)  # [B, N, C'], [B, M, C'] or None
    if block.use_pairwise:
        whitened = block.whiten(query, key)
        scale = block.planes**-0.5 / float(block.current_temperature())
        maps.pairwise = attention_rows(*whitened, index,
                                       scale=scale)  # [B, Q, M]
    if block.use_unary:
        if block.conv_mask is not None:
            logits = block.conv_mask(source).flatten(1)  # [B, M]
        else:  # mean_i(q_i) . k_j, as DisentangledNonLocalDet2D.unary
            logits = torch.matmul(query.mean(dim=1, keepdim=True),
                                  key.transpose(1, 2)).flatten(1)  # [B, M]
        maps.unary = logits.float().softmax(dim=-1)
    maps.key_grid = tuple(source.shape[2:])


def _context_maps(block: ContextBlock, x: Tensor, maps: BlockMaps) -> None:
    if block.pooling_type == 'att':
        logits = block.conv_mask(x).flatten(1)  # [B, HW]
        maps.unary = logits.float().softmax(dim=-1)
    else:
        maps.unary = x.new_full((x.shape[0], x.shape[2] * x.shape[3]),
                                1.0 / (x.shape[2] * x.shape[3])).float()
    maps.key_grid = maps.grid


# main class


class AttentionCapture:
    """Records the attention of every NL, DNL and GC block of a model.

    Args:
        model (nn.Module): A model holding the package's 2-D blocks.
        points (Sequence): ``(x, y)`` query points in network-input pixels.
        input_shape (tuple): ``(H, W)`` of the network input the points
            refer to.

    Use::

        with AttentionCapture(model, points, (H, W)) as capture:
            model(...)
        capture.maps  # {block name: BlockMaps} of that forward
    """

    def __init__(self, model: nn.Module,
                 points: Sequence[Tuple[float, float]],
                 input_shape: Tuple[int, int]) -> None:
        if len(points) < 1:
            raise ValueError('--queries needs at least one point')
        self.points = [tuple(map(float, p)) for p in points]
        self.input_shape = tuple(int(s) for s in input_shape)
        self.blocks = [
            (name, module) for name, module in model.named_modules()
            if isinstance(module, (NonLocalNd, ContextBlock,
                                   DisentangledNonLocalDet2D))
            and getattr(module, 'dim', 2) == 2
        ]
        self.maps: Dict[str, BlockMaps] = {}
        self._handles: list = []

    def _hook(self, name: str):

        def record(block: nn.Module, args: tuple, output: Tensor) -> None:
            x = args[0]
            grid = tuple(x.shape[2:])
            index = grid_index(self.points, self.input_shape,
                               grid).to(x.device)
            dnl = (DisentangledNonLocal, DisentangledNonLocalDet2D)
            kind = ('gc' if isinstance(block, ContextBlock) else
                    'dnl' if isinstance(block, dnl) else 'nl')
            maps = BlockMaps(name, kind, grid, grid, index)
            with torch.no_grad():
                if kind == 'gc':
                    _context_maps(block, x, maps)
                elif isinstance(block, DisentangledNonLocalDet2D):
                    _dnl_det_maps(block, x, index, maps)
                else:
                    _nonlocal_maps(block, x, index, maps)
                rows = x.flatten(2)[:, :, index]  # [B, C, Q]
                maps.features = rows.transpose(1, 2).float()  # [B, Q, C]
            self.maps[name] = maps

        return record

    def __enter__(self) -> AttentionCapture:
        self.maps = {}
        for name, block in self.blocks:
            self._handles.append(block.register_forward_hook(
                self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def query_independence(maps: BlockMaps) -> Statistics:
    """GCNet's statistic for each image of one block's maps.

    For one image, ``d = mean over query pairs i < j of
    1 - <a_i, a_j> / (|a_i| |a_j|)``, with ``a_i`` the attention map of
    query ``i`` over the key positions (:meth:`BlockMaps.query_rows`);
    ``features`` is the same with the block's input feature vectors at the
    queries, and ``pairwise`` with DNL's pairwise part alone. One query
    gives no pair: the lists stay empty.
    """
    stats = Statistics()
    if maps.index.numel() < 2:
        return stats
    rows = maps.query_rows()
    for image in range(rows.shape[0]):
        stats.attention.append(cosine_distance_mean(rows[image]))
        stats.features.append(cosine_distance_mean(maps.features[image]))
        if maps.kind == 'dnl' and maps.pairwise is not None:
            stats.pairwise.append(cosine_distance_mean(maps.pairwise[image]))
    return stats
