"""The concatenation pairwise function without its ``[N, M]`` map.

The non-local paper's concatenation form scores a pair of positions as
``ReLU(w^T [theta_i; phi_j])``. The projection of a concatenation splits into
``a_i + b_j`` with ``a = theta @ w_theta`` and ``b = phi @ w_phi``, so the
scores of a block of queries can be made from two vectors on the fly. mmcv
instead tiles both inputs into an ``[N, M, 2C']`` tensor before projecting it.

The fused path here walks over query chunks in both the forward and the
backward pass (which recomputes each chunk's scores), so its peak memory is
``O(chunk * M)`` instead of ``O(N * M)``. Under export (``torch.jit.trace``,
ONNX, ``torch.export``) the reference path runs instead: a custom autograd
function does not export faithfully (the TorchScript ONNX exporter inlined
this one into a graph that gave wrong outputs) and the chunk loop's length
would be frozen at the traced size. ``torch.compile`` traces the chunked
function.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .chunked import chunk_rows
from .precision import accumulation_dtype, no_autocast
from .sdpa import graph_capture


class _ChunkedConcatenation(torch.autograd.Function):
    """``y_i = sum_j ReLU(a_i + b_j) v_j / M``, chunked over ``i``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, value: Tensor) -> Tensor:
        # a: [B, N], b: [B, M], value: [B, M, Cv]
        num_keys = b.shape[1]
        rows = chunk_rows(a.shape[0], num_keys)
        out = value.new_empty(a.shape[0], a.shape[1], value.shape[2])
        for start in range(0, a.shape[1], rows):
            stop = start + rows
            # [B, c, M]
            scores = (a[:, start:stop, None] + b[:, None, :]).relu_()
            # [B, c, Cv]
            out[:, start:stop] = torch.bmm(scores, value)
        out.div_(num_keys)
        ctx.save_for_backward(a, b, value)
        return out  # [B, N, Cv]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        a, b, value = ctx.saved_tensors
        num_keys = b.shape[1]
        grad_out = grad_out.contiguous() / num_keys
        grad_a = torch.empty_like(a)
        grad_b = torch.zeros_like(b)
        grad_value = torch.zeros_like(value)
        rows = chunk_rows(a.shape[0], num_keys)
        for start in range(0, a.shape[1], rows):
            stop = start + rows
            scores = a[:, start:stop, None] + b[:, None, :]  # [B, c, M]
            active = scores > 0
            grad_y = grad_out[:, start:stop]  # [B, c, Cv]
            # dL/dv_j = sum_i ReLU(s_ij) dy_i
            grad_value.baddbmm_(scores.relu_().transpose(1, 2), grad_y)
            # dL/ds_ij = [s_ij > 0] * dy_i . v_j
            # [B, c, M]
            grad_scores = torch.matmul(grad_y, value.transpose(1, 2))
            grad_scores.mul_(active)
            grad_a[:, start:stop] = grad_scores.sum(dim=2)
            grad_b += grad_scores.sum(dim=1)
        return grad_a, grad_b, grad_value


def concatenation_attention(query: Tensor,
                            key: Tensor,
                            value: Tensor,
                            weight: Tensor,
                            *,
                            impl: str = 'fused') -> Tensor:
    """``sum_j ReLU(w^T [query_i; key_j]) value_j / M``.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        weight (Tensor): ``[2 * Cq]``, the first half projecting the query.
        impl (str): ``'fused'`` (chunked) or ``'reference'`` (builds the
            ``[B, N, M]`` map, as ``'fused'`` does under export).
            Default: ``'fused'``.

    Returns:
        Tensor: ``[B, N, Cv]`` in fp32 (fp64 for fp64 inputs).
    """
    dtype = accumulation_dtype(value)
    channels = query.shape[-1]
    with no_autocast(value):
        # [2 * Cq, 1]: a matrix, not a vector. onnxruntime 1.32's
        # MatmulTransposeFusion gives wrong numbers for a transposed input
        # times a 1-D weight (the sub-sampled keys' case).
        weight = weight.to(dtype).reshape(-1, 1)
        a = torch.matmul(query.to(dtype), weight[:channels])[..., 0]  # [B, N]
        b = torch.matmul(key.to(dtype), weight[channels:])[..., 0]  # [B, M]
        v = value.to(dtype)
        if impl == 'fused' and graph_capture() != 'export':
            out = _ChunkedConcatenation.apply(a.contiguous(), b.contiguous(),
                                              v.contiguous())
        else:
            # [B, N, M]
            attn = (a[:, :, None] + b[:, None, :]).relu() / b.shape[1]
            out = torch.matmul(attn, v)  # [B, N, Cv]
    return out
