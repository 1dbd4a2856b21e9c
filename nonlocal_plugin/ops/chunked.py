"""Softmax attention over query chunks, in plain matmuls.

The portable fused path: where no fused SDPA kernel takes an input (fp16 on
torch 2.1's CPU, or a head width a CUDA kernel refuses), the blocks still
never build the ``[N, M]`` map. A custom autograd function walks over
chunks of queries; the forward keeps only the output and each row's
log-sum-exp, and the backward recomputes each chunk's probabilities from
them, as flash attention does. Peak memory is ``O(chunk * M)``.

Query/key and value widths may differ, so nothing is padded.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .precision import floored_exp_

# Elements of one [B, chunk, M] tile: 4M floats, 16 MB in fp32.
TILE_ELEMENTS = 1 << 22


def chunk_rows(batch: int, num_keys: int) -> int:
    """Query rows per chunk, so one ``[batch, rows, num_keys]`` tile holds
    about :data:`TILE_ELEMENTS` elements."""
    return max(1, TILE_ELEMENTS // max(1, batch * num_keys))


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    """``softmax(scale * q k^T) v``, chunked over the queries."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor,
                scale: float) -> Tensor:
        # query: [B, N, Cq], key: [B, M, Cq], value: [B, M, Cv]
        batch, queries = query.shape[:2]
        rows = chunk_rows(batch, key.shape[1])
        key_t = key.transpose(1, 2)  # [B, Cq, M]
        out = value.new_empty(batch, queries, value.shape[2])
        lse = query.new_empty(batch, queries)
        for start in range(0, queries, rows):
            stop = start + rows
            # [B, c, M]
            probs = torch.matmul(query[:, start:stop], key_t).mul_(scale)
            peak = probs.amax(dim=-1, keepdim=True)  # [B, c, 1]
            floored_exp_(probs.sub_(peak))
            total = probs.sum(dim=-1, keepdim=True)  # [B, c, 1]
            # [B, c, Cv]
            out[:, start:stop] = torch.matmul(probs, value).div_(total)
            lse[:, start:stop] = (peak + total.log()).squeeze(-1)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.scale = scale
        return out  # [B, N, Cv]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        query, key, value, out, lse = ctx.saved_tensors
        scale = ctx.scale
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        # d(softmax) needs sum_c dO * O per query row: [B, N]
        delta = (grad_out * out).sum(dim=-1)
        grad_q = torch.empty_like(query) if need_q else None
        grad_k = torch.zeros_like(key) if need_k else None
        grad_v = torch.zeros_like(value) if need_v else None
        rows = chunk_rows(query.shape[0], key.shape[1])
        key_t = key.transpose(1, 2)  # [B, Cq, M]
        value_t = value.transpose(1, 2)  # [B, Cv, M]
        for start in range(0, query.shape[1], rows):
            stop = start + rows
            q, d_out = query[:, start:stop], grad_out[:, start:stop]
            # [B, c, M]: the probabilities, recomputed
            probs = torch.matmul(q, key_t).mul_(scale)
            floored_exp_(probs.sub_(lse[:, start:stop, None]))
            if need_v:
                grad_v.baddbmm_(probs.transpose(1, 2), d_out)
            if not (need_q or need_k):
                continue
            # dL/ds = p * (dL/dp - delta), [B, c, M]
            grad_s = torch.matmul(d_out, value_t)
            grad_s.sub_(delta[:, start:stop, None]).mul_(probs)
            if need_q:
                grad_q[:, start:stop] = torch.matmul(grad_s, key).mul_(scale)
            if need_k:
                grad_k.baddbmm_(grad_s.transpose(1, 2), q, alpha=scale)
        return grad_q, grad_k, grad_v, None


def chunked_softmax_attention(query: Tensor, key: Tensor, value: Tensor,
                              scale: float) -> Tensor:
    """``softmax(scale * query @ key^T) @ value`` in ``O(chunk * M)`` memory.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``, of the same dtype.
        scale (float): Multiplies the logits.

    Returns:
        Tensor: ``[B, N, Cv]`` in the inputs' dtype.
    """
    return _ChunkedSoftmaxAttention.apply(query.contiguous(),
                                          key.contiguous(),
                                          value.contiguous(), float(scale))
