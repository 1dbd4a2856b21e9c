"""Attention kernels shared by every block in this package.

Every kernel takes flattened, position-major tensors:

* ``query``  ``[B, N, Cq]``: one row per output position,
* ``key``    ``[B, M, Cq]``: one row per key position (``M < N`` when the
  block sub-samples its keys),
* ``value``  ``[B, M, Cv]``,

and returns ``[B, N, Cv]``. Each comes in implementations selected by
``impl``:

* ``'reference'`` builds the ``[B, N, M]`` pairwise map, exactly as the papers
  (and mmcv) write it. It is the yardstick the fused paths are tested against.
* ``'fused'`` never builds that map. The softmax modes run, on CPU, the
  symmetric tile-pair kernel where the queries are the keys (``gaussian``
  without sub-sampling, :mod:`.symmetric`), a fused SDPA kernel where the
  query and value widths are equal and one takes them (:mod:`.sdpa`), else
  the query-chunked kernel (:mod:`.chunked`), which takes unequal widths
  without padding; on CUDA, an SDPA kernel (with unequal widths where it
  takes them, else padded), else the chunked one. ``dot_product`` uses the
  associativity of matrix products; ``concatenation`` a query-chunked
  custom autograd function (:mod:`.concatenation`).
* ``'auto'`` (the blocks' default) picks per call: the softmax modes build
  the map when it has at most :data:`MATERIALISE_ELEMENTS` elements per
  image on that device (:data:`MATERIALISE_ELEMENTS_SHARED` where the
  queries are the keys), where building it was measured faster, with
  a hand-written backward that holds two maps where autograd holds three
  (:mod:`.materialised`), and run ``'fused'`` above that;
  ``dot_product`` takes whichever order needs fewer multiply-adds;
  ``concatenation`` runs ``'fused'``.

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
from .materialised import materialised_softmax_attention
from .precision import accumulation_dtype, no_autocast
from .sdpa import (
    compile_time_backend,
    fused_backend,
    graph_capture,
    only_backend,
    onnx_torchscript_export,
)
from .symmetric import symmetric_softmax_attention

ATTN_IMPLS = ('auto', 'fused', 'reference')

# 'auto' builds the softmax map when N * M is at most this, per image.
# Chosen from `python tools/attention_crossover.py` (fwd + bwd, fp32, the
# map path of 'auto' against 'fused', M = N and M = N / 4, widths 64-512;
# tables in the README's "Speed and memory" section):
# * CPU (Intel Xeon, 2 threads, torch 2.13): the map was faster at every
#   shape up to N * M = 2^17; from 2^18 to 2^20 at every shape of width 256
#   and more, at width 128 but for one shape (1.04x at 2^18), and at width
#   64 only sometimes (1.09x at 2^18, 0.98x at 2^19, 1.33x at 2^20; at 2^20
#   width 128 took 0.90x, 256 0.79x); above 2^20 fused won at most shapes.
#   At 2^20 the NL block's peak memory with the map was 1.10x mmcv's
#   (embedded_gaussian, N = 1024, `tools/benchmark.py --grid small
#   --runs 3`), against 0.60-0.68x fused, for about the same time; hence
#   2^19.
# * CUDA (NVIDIA H200, torch 2.11): the textbook map was faster at every
#   measured shape (up to N * M = 2^22), and mmcv's materialising block beat
#   the fused one at N * M = 2^24 (n4096, res4 rows of `tools/benchmark.py
#   --device cuda`) in fp32, fp16 and bf16; at res3 (2.8 * 2^28) the fused
#   embedded_gaussian was faster under autocast. Hence 2^25 (a 134 MB fp32
#   map).
MATERIALISE_ELEMENTS = {'cpu': 1 << 19, 'cuda': 1 << 25}
# The same where the queries are the keys (gaussian without sub-sampling),
# whose fused kernel is the symmetric one: on CPU the map was faster at
# both measured widths up to 2^20 (0.85x and 0.96x at 2^20), and at 2^21
# 0.89x and 1.11x.
MATERIALISE_ELEMENTS_SHARED = {'cpu': 1 << 20, 'cuda': 1 << 25}


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
    # The scale goes on the queries, so that only the logits and their
    # softmax are ever [B, N, M] (the same two maps as mmcv's block).
    query = query.to(dtype)
    if scale != 1.0:
        query = query * scale
    attn = torch.matmul(query, key.to(dtype).transpose(1, 2)).softmax(
        dim=-1)  # [B, N, M]
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
          backend: str, width: int, value_width: int) -> Tensor:
    """One fused SDPA backend on queries and keys zero-padded to ``width``
    and values to ``value_width``."""
    dtype = _kernel_dtype(value)
    batch, queries = query.shape[:2]
    keys, v_dim = key.shape[1], value.shape[-1]
    chunks = _query_chunks(batch, queries, query.device)
    rows = -(-queries // chunks)
    # Some kernels want one head dim for q, k and v. Zero columns change
    # neither q.k nor the kept part of the output. Zero query rows pad the
    # last chunk; their outputs are dropped.
    q = F.pad(query.to(dtype), (0, width - query.shape[-1], 0,
                                rows * chunks - queries))
    # [B * c, 1, N / c, w]
    q = q.reshape(batch * chunks, 1, rows, width).contiguous()
    # [B * c, 1, M, w]: each chunk gets its own contiguous copy of the keys
    # and values (the kernels refuse a stride-0 batch).
    k, v = (F.pad(t.to(dtype), (0, w - t.shape[-1])).unsqueeze(1).expand(
        batch, chunks, keys, w).reshape(batch * chunks, 1, keys,
                                        w).contiguous()
            for t, w in ((key, width), (value, value_width)))
    with only_backend(backend):
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    out = out.reshape(batch, chunks * rows, value_width)  # [B, N + pad, wv]
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


def _sdpa_widths(device: torch.device, dtype: torch.dtype, qk_width: int,
                 v_width: int, grad: bool):
    """``(backend, width, value_width)`` of the SDPA call to make, or None.

    On CPU only equal widths go to SDPA: there the chunked kernel, which
    pads nothing, was faster than the flash kernel on padded values. On
    CUDA an unpadded call is tried first, then one padded to one width.
    """
    if qk_width == v_width or device.type == 'cuda':
        backend = fused_backend(device, dtype, qk_width, value_width=v_width,
                                grad=grad)
        if backend is not None:
            return backend, qk_width, v_width
    if device.type == 'cuda':
        width = max(qk_width, v_width)
        backend = fused_backend(device, dtype, width, grad=grad)
        if backend is not None:
            return backend, width, width
    return None


def _fused_softmax(query: Tensor, key: Tensor, value: Tensor,
                   scale: float) -> Tensor:
    """Softmax attention without the ``[N, M]`` map (module docstring).

    Errors raised by a kernel, out of memory among them, propagate: which
    kernel runs is decided beforehand
    (:func:`~nonlocal_plugin.ops.sdpa.fused_backend`), not by catching.
    Under export, one SDPA call whose kernel the runtime picks.
    """
    qk_width, v_width = query.shape[-1], value.shape[-1]
    capture = graph_capture()
    if capture == 'export':
        return _whole_sdpa(query, key, value, scale, None,
                           max(qk_width, v_width))
    dtype = accumulation_dtype(value)
    if capture is None and query is key and query.device.type == 'cpu':
        return symmetric_softmax_attention(query.to(dtype), value.to(dtype),
                                           scale)
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query, key, value))
    if capture == 'compile':  # one width, the probe a graph constant
        width = max(qk_width, v_width)
        backend = compile_time_backend(query.device, _kernel_dtype(value),
                                       width, grad=grad)
        if backend is not None:
            return _whole_sdpa(query, key, value, scale, backend, width)
    else:
        call = _sdpa_widths(query.device, _kernel_dtype(value), qk_width,
                            v_width, grad)
        if call is not None:
            return _sdpa(query, key, value, scale, *call)
    return chunked_softmax_attention(query.to(dtype), key.to(dtype),
                                     value.to(dtype), scale)


def materialises(impl: str,
                 kind: str,
                 device: torch.device,
                 queries: int,
                 keys: int,
                 qk_width: int,
                 v_width: int,
                 *,
                 shared: bool = False) -> bool:
    """Whether ``impl`` builds the ``[N, M]`` map for this call.

    Args:
        impl (str): One of :data:`ATTN_IMPLS`.
        kind (str): ``'softmax'`` (``gaussian``, ``embedded_gaussian``,
            DNL's pairwise term), ``'dot_product'`` or ``'concatenation'``.
        device (torch.device): Where it runs.
        queries (int): ``N``.
        keys (int): ``M``.
        qk_width (int): ``Cq``.
        v_width (int): ``Cv``.
        shared (bool): The queries are the keys. Default: False.

    Returns:
        bool: True for the reference path.
    """
    if impl != 'auto':
        return impl == 'reference'
    if graph_capture() is not None:  # a captured graph holds for all sizes
        return False
    if kind == 'dot_product':  # fewer multiply-adds
        return (queries * keys * (qk_width + v_width) <
                (queries + keys) * qk_width * v_width)
    if kind == 'concatenation':  # its map is [N, M, 2 Cq]: never
        return False
    limits = MATERIALISE_ELEMENTS_SHARED if shared else MATERIALISE_ELEMENTS
    return queries * keys <= limits.get(device.type, 0)


def softmax_attention(query: Tensor,
                      key: Tensor,
                      value: Tensor,
                      *,
                      scale: float = 1.0,
                      impl: str = 'auto') -> Tensor:
    """``softmax(scale * query @ key^T) @ value`` over the key positions.

    This is the (embedded) gaussian pairwise function of the non-local block
    and the whitened pairwise term of DNL.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        scale (float): Multiplies the logits. Default: 1.0.
        impl (str): One of :data:`ATTN_IMPLS`. Default: ``'auto'``.

    Returns:
        Tensor: ``[B, N, Cv]`` in fp32 (fp64 for fp64 inputs).
    """
    dtype = accumulation_dtype(value)
    if query.shape[0] * query.shape[1] == 0:  # an empty batch or no queries
        return value.new_zeros(query.shape[0], query.shape[1],
                               value.shape[-1], dtype=dtype)
    with no_autocast(value):
        if impl == 'reference':
            out = _reference_softmax(query, key, value, scale)
        elif materialises(impl, 'softmax', query.device,
                          query.shape[1], key.shape[1], query.shape[-1],
                          value.shape[-1], shared=query is key):
            out = materialised_softmax_attention(
                query.to(dtype), key.to(dtype), value.to(dtype), scale)
        else:
            out = _fused_softmax(query, key, value, scale)
    return out.to(dtype)


def dot_product_attention(query: Tensor,
                          key: Tensor,
                          value: Tensor,
                          *,
                          impl: str = 'auto') -> Tensor:
    """``(query @ key^T / M) @ value``, the non-local dot-product function.

    With no softmax in between, the product regroups exactly as
    ``query @ (key^T @ value) / M``: ``O(N * Cq * Cv)`` instead of
    ``O(N * M * (Cq + Cv))``, and no ``[N, M]`` map.

    Args:
        query (Tensor): ``[B, N, Cq]``.
        key (Tensor): ``[B, M, Cq]``.
        value (Tensor): ``[B, M, Cv]``.
        impl (str): One of :data:`ATTN_IMPLS`. Default: ``'auto'``.

    Returns:
        Tensor: ``[B, N, Cv]`` in fp32 (fp64 for fp64 inputs).
    """
    num_keys = key.shape[1]
    dtype = accumulation_dtype(value)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    with no_autocast(value):
        if not materialises(impl, 'dot_product', query.device,
                            query.shape[1], num_keys, query.shape[-1],
                            value.shape[-1]):
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
                       impl: str = 'auto') -> Tensor:
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
        impl (str): One of :data:`ATTN_IMPLS`. Default: ``'auto'``.

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
        builds = materialises(impl, 'concatenation', query.device,
                              query.shape[1], key.shape[1], query.shape[-1],
                              value.shape[-1])
        return concatenation_attention(
            query, key, value, concat_weight,
            impl='reference' if builds else 'fused')
    raise ValueError(f'unknown pairwise mode {mode!r}')
