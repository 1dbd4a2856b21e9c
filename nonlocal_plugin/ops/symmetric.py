"""Softmax attention whose queries are its keys, over pairs of tiles.

The non-local block's ``gaussian`` function (arXiv 1711.07971, eq. 2)
compares the input with itself: without sub-sampling, ``query is key`` and
the logits ``S = scale * X X^T`` are symmetric. A kernel that knows it
computes each off-diagonal tile ``S_ij`` once and uses it for both row
blocks ``i`` (as ``S_ij``) and ``j`` (as ``S_ij^T``):

* forward: one product for ``S`` per tile pair (half the map's), folded
  into an online (flash-style) softmax for both row blocks;
* backward: ``S`` recomputed per tile pair, and the two gradient terms of
  ``X`` (as query and as key) merged before the product,
  ``dX_i += scale (dS_ij + dS_ji^T) X_j`` and ``dX_j += scale (...)^T X_i``.

In units of ``N M C`` multiply-adds with a value of width ``C / 2`` (the
block's), a materialising implementation such as mmcv's spends 4.5 (1.5
forward, 3 backward); this one 3.5 (1 and 2.5). Memory is ``O(tile^2)``
beyond the inputs and outputs: nothing ``N x N`` is kept for the backward.
The value width is free (no padding to the query width, as SDPA needs).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .precision import floored_exp_

# Elements of one [B, tile, tile] block: 256K floats (512 x 512 for one
# image), 1 MB in fp32; the kernel holds a few such blocks at a time.
# `python tools/attention_crossover.py --tiles` (Intel Xeon, 2 threads,
# torch 2.13, fwd + bwd): at N = 4096, C = 512, 2^18 took 236 ms (2^17:
# 273, 2^19: 246, 2^20: 287, 2^22: 329); at N = 4200, C = 1024, 454 ms
# (2^19: 435, 2^20: 502).
TILE_ELEMENTS = 1 << 18


def tile_rows(batch: int, positions: int) -> int:
    """Rows per tile, so that a ``[batch, rows, rows]`` block holds about
    :data:`TILE_ELEMENTS` elements."""
    rows = int(math.isqrt(TILE_ELEMENTS // max(1, batch)))
    return max(1, min(positions, rows))


def _tiles(positions: int, rows: int) -> List[Tuple[int, int]]:
    return [(start, min(start + rows, positions))
            for start in range(0, positions, rows)]


def _pairs(tiles: List[Tuple[int, int]]):
    """Tile pairs ``(i, j)``, ``i <= j``: the diagonal ones first.

    A row's largest logit is usually its own (``|x_i|^2`` against
    ``x_i . x_j``); seen first, it fixes the running maximum early, so the
    online softmax rarely rescales, and never into subnormal numbers, which
    slow every later product that touches them.
    """
    diagonal = [(t, t) for t in tiles]
    return diagonal + [(tiles[a], t) for a in range(len(tiles))
                       for t in tiles[a + 1:]]


def _accumulate(out: Tensor, peak: Tensor, total: Tensor, logits: Tensor,
                value: Tensor) -> None:
    """Folds one logit tile into an online softmax, in place.

    ``out`` ``[B, r, Cv]`` (unnormalised), ``peak`` and ``total``
    ``[B, r, 1]`` (running row maximum and sum of exponentials), ``logits``
    ``[B, r, c]``, ``value`` ``[B, c, Cv]``.
    """
    new_peak = torch.maximum(peak, logits.amax(dim=-1, keepdim=True))
    correction = (peak - new_peak).exp_()  # 0 where peak was -inf
    probs = floored_exp_(logits - new_peak)  # [B, r, c]
    total.mul_(correction).add_(probs.sum(dim=-1, keepdim=True))
    out.mul_(correction).baddbmm_(probs, value)
    peak.copy_(new_peak)


class _SymmetricSoftmaxAttention(torch.autograd.Function):
    """``softmax(scale * x x^T) v`` over tile pairs."""

    @staticmethod
    def forward(ctx, rows: Tensor, value: Tensor, scale: float) -> Tensor:
        # rows: [B, N, C], value: [B, N, Cv]
        batch, positions = rows.shape[:2]
        tiles = _tiles(positions, tile_rows(batch, positions))
        out = value.new_zeros(batch, positions, value.shape[2])
        peak = rows.new_full((batch, positions, 1), -math.inf)
        total = rows.new_zeros(batch, positions, 1)
        for (i0, i1), (j0, j1) in _pairs(tiles):
            # [B, ri, rj]
            logits = torch.matmul(rows[:, i0:i1],
                                  rows[:, j0:j1].transpose(1, 2)).mul_(scale)
            _accumulate(out[:, i0:i1], peak[:, i0:i1], total[:, i0:i1],
                        logits, value[:, j0:j1])
            if j0 != i0:  # the mirrored tile, rows j: [B, rj, ri]
                _accumulate(out[:, j0:j1], peak[:, j0:j1], total[:, j0:j1],
                            logits.transpose(1, 2), value[:, i0:i1])
        out.div_(total)
        lse = (peak + total.log()).squeeze(-1)  # [B, N]
        ctx.save_for_backward(rows, value, out, lse)
        ctx.scale = scale
        return out  # [B, N, Cv]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        rows, value, out, lse = ctx.saved_tensors
        scale = ctx.scale
        need_x, need_v = ctx.needs_input_grad[:2]
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # [B, N, 1]
        lse = lse.unsqueeze(-1)  # [B, N, 1]
        grad_x = torch.zeros_like(rows) if need_x else None
        grad_v = torch.zeros_like(value) if need_v else None
        tiles = _tiles(rows.shape[1], tile_rows(*rows.shape[:2]))

        def half(logits: Tensor, i: slice, j: slice) -> Tensor:
            """dL/dS of the rows ``i`` against keys ``j``, ``[B, ri, rj]``;
            accumulates dL/dV of the keys ``j`` on the way."""
            probs = floored_exp_(logits - lse[:, i])
            if need_v:
                grad_v[:, j].baddbmm_(probs.transpose(1, 2), grad_out[:, i])
            grad_p = torch.matmul(grad_out[:, i], value[:, j].transpose(1, 2))
            return grad_p.sub_(delta[:, i]).mul_(probs)

        for (i0, i1), (j0, j1) in _pairs(tiles):
            i, j = slice(i0, i1), slice(j0, j1)
            # [B, ri, rj], recomputed
            logits = torch.matmul(rows[:, i], rows[:, j].transpose(1, 2))
            logits.mul_(scale)
            grad_s = half(logits, i, j)
            if j0 != i0:
                grad_s += half(logits.transpose(1, 2), j, i).transpose(1, 2)
            elif need_x:
                grad_s = grad_s + grad_s.transpose(1, 2)
            if not need_x:
                continue
            grad_x[:, i].baddbmm_(grad_s, rows[:, j], alpha=scale)
            if j0 != i0:
                grad_x[:, j].baddbmm_(grad_s.transpose(1, 2), rows[:, i],
                                      alpha=scale)
        return grad_x, grad_v, None


def symmetric_softmax_attention(rows: Tensor, value: Tensor,
                                scale: float) -> Tensor:
    """``softmax(scale * rows @ rows^T) @ value``, queries = keys = ``rows``.

    Args:
        rows (Tensor): ``[B, N, C]``, both the queries and the keys.
        value (Tensor): ``[B, N, Cv]``, of the same dtype.
        scale (float): Multiplies the logits.

    Returns:
        Tensor: ``[B, N, Cv]`` in the inputs' dtype.
    """
    return _SymmetricSoftmaxAttention.apply(rows.contiguous(),
                                            value.contiguous(), float(scale))
