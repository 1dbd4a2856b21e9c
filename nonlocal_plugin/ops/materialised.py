"""Softmax attention through the ``[N, M]`` map, in as few maps as it takes.

Where the map is small, building it is faster than the fused kernels
(``attn_impl='auto'``, :data:`~.attention.MATERIALISE_ELEMENTS`). Through
autograd, the textbook path (``impl='reference'``, and mmcv's block) holds
three maps at once in the backward: the saved probabilities, their
gradient and the logits' gradient. This function computes the logits'
gradient in place of the probabilities' (``dS = P * (dP - delta)``, with
``delta = sum(dO * O)`` per row), so it holds at most two maps, forward or
backward, and keeps one for the backward.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _MaterialisedSoftmaxAttention(torch.autograd.Function):
    """``softmax(scale * q k^T) v`` with a hand-written backward."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor,
                scale: float) -> Tensor:
        # query: [B, N, Cq], key: [B, M, Cq], value: [B, M, Cv]
        probs = torch.matmul(query * scale if scale != 1.0 else query,
                             key.transpose(1, 2)).softmax(dim=-1)  # [B, N, M]
        out = torch.matmul(probs, value)  # [B, N, Cv]
        ctx.save_for_backward(query, key, value, probs, out)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        query, key, value, probs, out = ctx.saved_tensors
        scale = ctx.scale
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_v = (torch.matmul(probs.transpose(1, 2), grad_out)
                  if need_v else None)  # [B, M, Cv]
        if not (need_q or need_k):
            return None, None, grad_v, None
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # [B, N, 1]
        # dL/dP, then dL/dS in the same buffer: [B, N, M]
        grad_s = torch.matmul(grad_out, value.transpose(1, 2))
        grad_s.sub_(delta).mul_(probs)
        if scale != 1.0:
            grad_s.mul_(scale)
        grad_q = torch.matmul(grad_s, key) if need_q else None  # [B, N, Cq]
        grad_k = (torch.matmul(grad_s.transpose(1, 2), query)
                  if need_k else None)  # [B, M, Cq]
        return grad_q, grad_k, grad_v, None


def materialised_softmax_attention(query: Tensor, key: Tensor, value: Tensor,
                                   scale: float) -> Tensor:
    """``softmax(scale * query @ key^T) @ value``, building the map.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``, of the same dtype.
        scale (float): Multiplies the logits.

    Returns:
        Tensor: ``[B, N, Cv]`` in the inputs' dtype.
    """
    return _MaterialisedSoftmaxAttention.apply(query, key, value,
                                               float(scale))
