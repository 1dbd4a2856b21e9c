"""Attention rows of chosen queries: what a block attends to, cheaply.

The attention of a non-local block (Wang et al., "Non-local Neural
Networks", https://arxiv.org/abs/1711.07971) is an ``[N, M]`` map over
``N`` query and ``M`` key positions, which the fused kernels never build.
To look at it, :func:`attention_rows` computes the rows of a few chosen
queries only, from the block's own query and key rows: ``O(Q * M)`` for
``Q`` queries, nothing ``N x M``. :func:`attention_rows_reference` is its
twin: it builds the whole map through the blocks' reference kernel
(:func:`~.attention.pairwise_attention` with ``impl='reference'``) and
picks the rows, so the two agree only if the rows are what the block
applies to its values.

Each row holds the weights that multiply the value rows: softmax modes give
rows that sum to 1; ``dot_product`` gives ``q.k / M``; ``concatenation``
gives ``ReLU(w^T [q; k]) / M``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .attention import pairwise_attention
from .precision import accumulation_dtype

ROW_MODES = ('gaussian', 'embedded_gaussian', 'dot_product', 'concatenation')


def _check(query: Tensor, key: Tensor, index: Tensor, mode: str) -> None:
    if mode not in ROW_MODES:
        raise ValueError(f'mode must be one of {ROW_MODES}, got {mode!r}')
    if query.dim() != 3 or key.dim() != 3:
        raise ValueError('query and key must be [B, N, C] and [B, M, C], '
                         f'got {tuple(query.shape)} and {tuple(key.shape)}')
    if index.dim() != 1 or index.dtype not in (torch.int32, torch.int64):
        raise TypeError('index must be a 1-D integer tensor of query '
                        f'positions, got {index.dtype} {tuple(index.shape)}')


def attention_rows(query: Tensor,
                   key: Tensor,
                   index: Tensor,
                   *,
                   mode: str = 'embedded_gaussian',
                   scale: float = 1.0,
                   concat_weight: Tensor | None = None) -> Tensor:
    """The attention weights of the queries at ``index`` over all keys.

    Args:
        query (Tensor): ``[B, N, Cq]``, every query row of the block.
        key (Tensor): ``[B, M, Cq]``.
        index (Tensor): ``[Q]`` positions in ``0..N-1``.
        mode (str): The pairwise function, one of :data:`ROW_MODES`.
            Default: ``'embedded_gaussian'``.
        scale (float): Logit scale of the softmax modes. Default: 1.0.
        concat_weight (Tensor, optional): ``[2 * Cq]``, needed by
            ``'concatenation'``.

    Returns:
        Tensor: ``[B, Q, M]`` in fp32 (fp64 for fp64 inputs).
    """
    _check(query, key, index, mode)
    dtype = accumulation_dtype(key)
    q = query[:, index.long()].to(dtype)  # [B, Q, Cq]
    k = key.to(dtype)  # [B, M, Cq]
    if mode in ('gaussian', 'embedded_gaussian'):
        return (torch.matmul(q, k.transpose(1, 2)) * scale).softmax(-1)
    if mode == 'dot_product':
        return torch.matmul(q, k.transpose(1, 2)) / k.shape[1]  # [B, Q, M]
    if concat_weight is None:
        raise ValueError("mode='concatenation' needs concat_weight")
    weight = concat_weight.to(dtype).reshape(-1)  # [2 * Cq]
    channels = q.shape[-1]
    a = torch.matmul(q, weight[:channels])  # [B, Q]
    b = torch.matmul(k, weight[channels:])  # [B, M]
    return (a[:, :, None] + b[:, None, :]).relu() / k.shape[1]  # [B, Q, M]


def attention_rows_reference(query: Tensor,
                             key: Tensor,
                             index: Tensor,
                             *,
                             mode: str = 'embedded_gaussian',
                             scale: float = 1.0,
                             concat_weight: Tensor | None = None) -> Tensor:
    """:func:`attention_rows` through the blocks' reference kernel.

    The whole ``[B, N, M]`` map is what the reference kernel applies to an
    identity value (``map @ I``); the rows at ``index`` are picked from it.
    For tests and small inputs only. Same arguments and result.
    """
    _check(query, key, index, mode)
    dtype = accumulation_dtype(key)
    batch, num_keys = key.shape[:2]
    eye = torch.eye(num_keys, dtype=dtype, device=key.device)
    value = eye.expand(batch, num_keys, num_keys)  # [B, M, M]
    full = pairwise_attention(query.to(dtype), key.to(dtype), value,
                              mode=mode, scale=scale,
                              concat_weight=concat_weight,
                              impl='reference')  # [B, N, M]
    return full[:, index.long()]  # [B, Q, M]


def cosine_distance_mean(rows: Tensor) -> float:
    """Mean cosine distance between the rows of ``rows``, over pairs.

    ``1 - <r_i, r_j> / (|r_i| |r_j|)`` averaged over the ``Q (Q - 1) / 2``
    unordered pairs ``i < j``: GCNet's statistic of how much the attention
    maps (or features) of different query positions differ. 0 when all
    rows point the same way.

    Args:
        rows (Tensor): ``[Q, D]`` with ``Q >= 2``.

    Returns:
        float: The mean distance (0 to 2; 0 to 1 for non-negative rows).
    """
    if rows.dim() != 2 or rows.shape[0] < 2:
        raise ValueError('rows must be [Q, D] with at least 2 rows, got '
                         f'{tuple(rows.shape)}')
    unit = torch.nn.functional.normalize(rows.double(), dim=1)  # [Q, D]
    similarity = unit @ unit.t()  # [Q, Q]
    count = rows.shape[0]
    upper = torch.triu_indices(count, count, offset=1)
    distance = (1 - similarity[upper[0], upper[1]]).clamp_min(0)  # rounding
    return float(distance.mean())
