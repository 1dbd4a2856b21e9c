"""Attention kernels shared by every block in this package.

Every kernel takes flattened, position-major tensors:

* ``query``  ``[B, N, Cq]``: one row per output position,
* ``key``    ``[B, M, Cq]``: one row per key position (``M < N`` when the
  block sub-samples its keys),
* ``value``  ``[B, M, Cv]``,

and returns ``[B, N, Cv]``. Each comes in two implementations selected by
``impl``:

* ``'reference'`` builds the ``[B, N, M]`` pairwise map, exactly as the papers
  (and mmcv) write it. It is the yardstick the fused paths are tested against.
* ``'fused'`` never builds that map. The softmax modes run a fused SDPA
  kernel where one takes the input (:mod:`.sdpa`), else a query-chunked
  custom autograd function (:mod:`.chunked`); ``dot_product`` uses the
  associativity of matrix products; ``concatenation`` a query-chunked
  custom autograd function (:mod:`.concatenation`).

Under graph capture (:func:`~.sdpa.graph_capture`) the softmax modes run one
SDPA call over all queries: no query chunks (their count depends on the
thread count and the input size through Python), and, under
``torch.compile``, the backend found by the probe as a graph constant. An
exported graph leaves the choice of kernel to its runtime (torch's SDPA
dispatch for a traced module, MatMul and Softmax in ONNX).

Precision: logits and softmax statistics are always accumulated in fp32, so
inputs that would overflow fp16 (unscaled gaussian logits, DNL's temperature
of 0.05) stay finite under autocast. Results come back in fp32 (fp64 for
fp64 inputs) whatever the input precision: a dot-product context can leave
fp16's range even when its inputs do not, so the caller decides when to
round.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import chunked_softmax_attention
from .concatenation import concatenation_attention
from .precision import accumulation_dtype, no_autocast
from .sdpa import (
    compile_time_backend,
    fused_backend,
    graph_capture,
    only_backend,
    onnx_torchscript_export,
)

ATTN_IMPLS = ('fused', 'reference')


def _kernel_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype the fused softmax kernel runs in.

    CUDA's flash kernels keep their softmax statistics in fp32 and are fastest
    in half precision, so they take reduced-precision inputs as they are. The
    CPU flash kernel rounds the probabilities to the input dtype before the
    second product, so on CPU the kernel runs in fp32.
    """
    if tensor.device.type == 'cuda' and tensor.dtype in (torch.float16,
                                                         torch.bfloat16):
        return tensor.dtype
    return accumulation_dtype(tensor)


def _reference_softmax(query: Tensor, key: Tensor, value: Tensor,
                       scale: float) -> Tensor:
    dtype = accumulation_dtype(value)
    logits = torch.matmul(query.to(dtype), key.to(dtype).transpose(1, 2))
    attn = (logits * scale).softmax(dim=-1)  # [B, N, M]
    return torch.matmul(attn, value.to(dtype))  # [B, N, Cv]


def _query_chunks(batch: int, queries: int, device: torch.device) -> int:
    """How many independent query chunks to hand the CPU flash kernel.

    torch's CPU flash backward parallelises over batch x heads only; with
    one image and one head it runs one task, and with two threads it was
    measured 16x slower than with one (0.52 s against 8.5 s at N=4200,
    d=256, with the machine loaded). Chunks of queries against the same keys
    are independent attention problems, so they are stacked as a batch.
    """
    threads = torch.get_num_threads()
    if device.type != 'cpu' or batch >= threads:
        return 1
    return max(1, min(-(-threads // batch), queries // 64))


def _sdpa(query: Tensor, key: Tensor, value: Tensor, scale: float,
          backend: str, width: int) -> Tensor:
    """One fused SDPA backend on inputs zero-padded to one head ``width``."""
    dtype = _kernel_dtype(value)
    batch, queries = query.shape[:2]
    keys, v_dim = key.shape[1], value.shape[-1]
    chunks = _query_chunks(batch, queries, query.device)
    rows = -(-queries // chunks)
    # Flash kernels want one head dim for q, k and v. Zero columns change
    # neither q.k nor the kept part of the output. Zero query rows pad the
    # last chunk; their outputs are dropped.
    q = F.pad(query.to(dtype), (0, width - query.shape[-1], 0,
                                rows * chunks - queries))
    # [B * c, 1, N / c, w]
    q = q.reshape(batch * chunks, 1, rows, width).contiguous()
    # [B * c, 1, M, w]: each chunk gets its own contiguous copy of the keys
    # and values (the kernels refuse a stride-0 batch).
    k, v = (F.pad(t.to(dtype), (0, width - t.shape[-1])).unsqueeze(1).expand(
        batch, chunks, keys, width).reshape(batch * chunks, 1, keys,
                                            width).contiguous()
            for t in (key, value))
    with only_backend(backend):
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    out = out.reshape(batch, chunks * rows, width)  # [B, N + pad, w]
    return out[:, :queries, :v_dim]  # [B, N, Cv]


def _one_head(rows: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """``[B, *, C]`` rows as one contiguous head ``[B, 1, *, width]``; zero
    columns change neither ``q.k`` nor the kept part of the output."""
    rows = rows.to(dtype)
    if rows.shape[-1] != width:
        rows = F.pad(rows, (0, width - rows.shape[-1]))
    return rows.unsqueeze(1).contiguous()


def _whole_sdpa(query: Tensor, key: Tensor, value: Tensor, scale: float,
                backend: Optional[str], width: int) -> Tensor:
    """One SDPA call over every query, for captured graphs.

    No size reaches Python, so the graph holds for every input size.
    ``backend=None`` leaves the choice to the runtime's dispatch.
    """
    dtype = _kernel_dtype(value)
    switch = (only_backend(backend)
              if backend is not None else contextlib.nullcontext())
    q = _one_head(query, width, dtype)  # [B, 1, N, w]
    sdpa_scale: Optional[float] = scale
    if onnx_torchscript_export():
        # torch 2.1's ONNX symbolic of SDPA refuses a float `scale`; its
        # default, 1 / sqrt(w), is folded into the queries instead.
        q, sdpa_scale = q * (scale * width**0.5), None
    with switch:
        out = F.scaled_dot_product_attention(
            q, _one_head(key, width, dtype), _one_head(value, width, dtype),
            scale=sdpa_scale)
    return out[:, 0, :, :value.shape[-1]]  # [B, N, Cv]


def _fused_softmax(query: Tensor, key: Tensor, value: Tensor,
                   scale: float) -> Tensor:
    """A fused SDPA kernel where one takes the input, else the chunked one.

    Neither builds the ``[N, M]`` map. Errors raised by the kernel, out of
    memory among them, propagate: which kernel runs is decided beforehand
    (:func:`~nonlocal_plugin.ops.sdpa.fused_backend`), not by catching.
    Under export, one SDPA call whose kernel the runtime picks.
    """
    width = max(query.shape[-1], value.shape[-1])
    capture = graph_capture()
    if capture == 'export':
        return _whole_sdpa(query, key, value, scale, None, width)
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query, key, value))
    if capture == 'compile':
        backend = compile_time_backend(query.device, _kernel_dtype(value),
                                       width, grad=grad)
        if backend is not None:
            return _whole_sdpa(query, key, value, scale, backend, width)
    else:
        backend = fused_backend(query.device, _kernel_dtype(value), width,
                                grad=grad)
        if backend is not None:
            return _sdpa(query, key, value, scale, backend, width)
    dtype = accumulation_dtype(value)
    return chunked_softmax_attention(query.to(dtype), key.to(dtype),
                                     value.to(dtype), scale)


def softmax_attention(query: Tensor,
                      key: Tensor,
                      value: Tensor,
                      *,
                      scale: float = 1.0,
                      impl: str = 'fused') -> Tensor:
    """``softmax(scale * query @ key^T) @ value`` over the key positions.

    This is the (embedded) gaussian pairwise function of the non-local block
    and the whitened pairwise term of DNL.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        scale (float): Multiplies the logits. Default: 1.0.
        impl (str): ``'fused'`` or ``'reference'``. Default: ``'fused'``.

    Returns:
        Tensor: ``[B, N, Cv]`` in fp32 (fp64 for fp64 inputs).
    """
    dtype = accumulation_dtype(value)
    if query.shape[0] * query.shape[1] == 0:  # an empty batch or no queries
        return value.new_zeros(query.shape[0], query.shape[1],
                               value.shape[-1], dtype=dtype)
    with no_autocast(value):
        if impl == 'fused':
            out = _fused_softmax(query, key, value, scale)
        else:
            out = _reference_softmax(query, key, value, scale)
    return out.to(dtype)


def dot_product_attention(query: Tensor,
                          key: Tensor,
                          value: Tensor,
                          *,
                          impl: str = 'fused') -> Tensor:
    """``(query @ key^T / M) @ value``, the non-local dot-product function.

    With no softmax in between, the product regroups exactly as
    ``query @ (key^T @ value) / M``: ``O(N * Cq * Cv)`` instead of
    ``O(N * M * (Cq + Cv))``, and no ``[N, M]`` map.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        impl (str): ``'fused'`` or ``'reference'``. Default: ``'fused'``.

    Returns:
        Tensor: ``[B, N, Cv]`` in fp32 (fp64 for fp64 inputs).
    """
    num_keys = key.shape[1]
    dtype = accumulation_dtype(value)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    with no_autocast(value):
        if impl == 'fused':
            # [B, Cq, Cv]
            context = torch.matmul(k.transpose(1, 2), v) / num_keys
            out = torch.matmul(q, context)  # [B, N, Cv]
        else:
            attn = torch.matmul(q, k.transpose(1, 2)) / num_keys  # [B, N, M]
            out = torch.matmul(attn, v)  # [B, N, Cv]
    return out


def softmax_pool(logits: Tensor, value: Tensor) -> Tensor:
    """Pools ``value`` over positions with ``softmax(logits)`` as weights.

    GCNet's attention pooling and DNL's unary term.

    Args:
        logits (Tensor): ``[B, M]``, one score per position.
        value (Tensor): ``[B, M, C]``.

    Returns:
        Tensor: ``[B, C]`` in fp32 (fp64 for fp64 inputs).
    """
    dtype = accumulation_dtype(value)
    if torch.jit.is_scripting():  # autocast there needs a constant device
        return _softmax_pool(logits, value, dtype)
    with no_autocast(value):
        return _softmax_pool(logits, value, dtype)


def _softmax_pool(logits: Tensor, value: Tensor,
                  dtype: torch.dtype) -> Tensor:
    weights = logits.to(dtype).softmax(dim=-1).unsqueeze(1)  # [B, 1, M]
    return torch.matmul(weights, value.to(dtype)).squeeze(1)  # [B, C]


def pairwise_attention(query: Tensor,
                       key: Tensor,
                       value: Tensor,
                       *,
                       mode: str,
                       scale: float = 1.0,
                       concat_weight: Tensor | None = None,
                       impl: str = 'fused') -> Tensor:
    """Aggregates ``value`` with one of the non-local pairwise functions.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        mode (str): ``'gaussian'``, ``'embedded_gaussian'``,
            ``'dot_product'`` or ``'concatenation'``.
        scale (float): Logit scale of the softmax modes. Default: 1.0.
        concat_weight (Tensor, optional): ``[2 * Cq]``, the projection of
            ``[query_i; key_j]`` used by ``'concatenation'``.
        impl (str): ``'fused'`` or ``'reference'``. Default: ``'fused'``.

    Returns:
        Tensor: ``[B, N, Cv]``.
    """
    if mode in ('gaussian', 'embedded_gaussian'):
        return softmax_attention(query, key, value, scale=scale, impl=impl)
    if mode == 'dot_product':
        return dot_product_attention(query, key, value, impl=impl)
    if mode == 'concatenation':
        if concat_weight is None:
            raise ValueError("mode='concatenation' needs concat_weight")
        return concatenation_attention(query, key, value, concat_weight,
                                       impl=impl)
    raise ValueError(f'unknown pairwise mode {mode!r}')
