"""The CUDA path: fused kernels against the reference, backends and memory.

Every test here is marked ``cuda`` and skipped where
``torch.cuda.is_available()`` is False, so the default ``pytest -q`` run
collects and skips them on CPU machines. On a GPU machine::

    python -m pytest -q -m cuda -s tests/test_cuda.py  # or tools/gpu_check.sh

``-s`` shows what the tests print: the SDPA backend table and the peak
memory figures.

* :func:`test_fused_attention_matches_reference` and
  :func:`test_fused_block_matches_reference`: ``softmax_attention`` and
  ``NonLocal2D`` (under ``torch.autocast('cuda', dtype)`` for fp16 and bf16)
  at head widths 64, 256, 512 and 1024, forward and backward, fused against
  reference, to :func:`rtol`.
* :func:`test_backend_table`: a fused SDPA backend takes every head width in
  fp16 and bf16.
* :func:`test_fused_attention_never_builds_the_map`: whichever kernel runs
  (a fused SDPA backend or the chunked one), the peak memory of
  ``softmax_attention(impl='fused')`` stays far below one ``N x N`` map,
  and the reference path is never called.
* :func:`test_res3_block_peak_memory`: one res3-sized NonLocal2D, forward +
  backward, below a quarter of one ``N x N`` fp32 map.
"""
from __future__ import annotations

import pytest
import torch
from conftest import rel_err, tolerance

from nonlocal_plugin import NonLocal2D
from nonlocal_plugin.ops import attention as attention_ops
from nonlocal_plugin.ops import softmax_attention
from nonlocal_plugin.ops.sdpa import backend_table

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason='needs a CUDA device '
                       '(torch.cuda.is_available() is False)'),
]

DEVICE = 'cuda'
#: Head widths: 64 and 256 (flash's range), 512 (NL at res4: 1024 // 2
#: channels) and 1024 (gaussian mode, whose width is C, at res4).
WIDTHS = (64, 256, 512, 1024)
DTYPES = [
    pytest.param(torch.float32, id='fp32'),
    pytest.param(torch.float16, id='fp16'),
    pytest.param(torch.bfloat16, id='bf16'),
]
HALF_DTYPES = (torch.float16, torch.bfloat16)
#: Batch, queries and keys of the kernel comparisons (fewer keys than
#: queries, as with sub-sampled keys, so that a transposed [N, M] shows).
BATCH, QUERIES, KEYS = 2, 256, 192
#: Spatial size of the block comparisons (N = M = 192 positions).
BLOCK_HW = (12, 16)
#: res3 of an 800 x 1333 image (stride 8): NonLocal2D(512) there.
RES3 = (512, 100, 168)
#: The fused paths' peak extra memory must stay below this fraction of
#: one N x N fp32 map.
MAP_FRACTION = 0.25


def rtol(dtype: torch.dtype, terms: int, roundings: float = 3.0) -> float:
    """:func:`conftest.tolerance`, counting the CUDA kernels' roundings.

    Errors are measured in the norm of the whole expected tensor
    (:func:`conftest.rel_err`), so a gradient is held to its overall scale.
    The fused CUDA kernels take fp16 and bf16 as they are and round to the
    dtype the probabilities before ``P @ V``, the output, the incoming
    gradient and the logit gradients: 3 roundings for the kernel, 4 in a
    block, whose autocast also rounds the gradient entering the kernel. All
    sums run in fp32, which is the accumulation dtype ``tolerance`` assumes
    for half precision.
    """
    return tolerance(dtype, terms, roundings=roundings)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Keeps fp32 matmuls and convs in fp32 (no TF32) during each test."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved


def _autocast(device: str, dtype: torch.dtype) -> torch.autocast:
    """``torch.autocast`` in ``dtype``; disabled for fp32."""
    return torch.autocast(device, dtype=dtype,
                          enabled=dtype != torch.float32)


def _peak_extra_bytes(step) -> int:
    """Peak CUDA memory allocated by ``step()`` beyond what was live."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _reference_is_forbidden(*args, **kwargs):
    raise AssertionError("impl='fused' called the reference (math) path")


# a. fused against reference


def check_attention(device: str, dtype: torch.dtype, width: int,
                    value_width: int, backward: bool) -> None:
    """``softmax_attention`` fused against reference on ``device``.

    The inputs are stored in ``dtype``; so is the upstream gradient's value
    (then given in fp32, the output's dtype), so that neither path rounds
    the inputs differently.
    """
    shapes = ((BATCH, QUERIES, width), (BATCH, KEYS, width),
              (BATCH, KEYS, value_width))
    inputs = [torch.randn(s, device=device).to(dtype) for s in shapes]
    grad = torch.randn(BATCH, QUERIES, value_width,
                       device=device).to(dtype).float()
    scale = 2 * width**-0.5  # logits with a standard deviation of 2
    outs, grads = [], []
    for impl in ('fused', 'reference'):
        q, k, v = (t.clone().requires_grad_(backward) for t in inputs)
        with torch.set_grad_enabled(backward):
            out = softmax_attention(q, k, v, scale=scale, impl=impl)
        assert out.dtype == torch.float32, impl
        assert torch.isfinite(out).all(), impl
        outs.append(out.detach())
        if backward:
            out.backward(grad)
            grads.append([t.grad for t in (q, k, v)])
    bound = rtol(dtype, width * KEYS)
    err = rel_err(*outs)
    assert err <= bound, f'output: error {err:.3e} > {bound:.3e}'
    if not backward:
        return
    bound = rtol(dtype, width * max(QUERIES, KEYS))
    for name, got, want in zip('qkv', *grads):
        assert got.dtype == dtype, name
        assert torch.isfinite(got).all(), name
        err = rel_err(got, want)
        assert err <= bound, f'grad {name}: error {err:.3e} > {bound:.3e}'


@pytest.mark.parametrize('backward', [False, True],
                         ids=['forward', 'backward'])
@pytest.mark.parametrize('value_div', [1, 2], ids=['v=w', 'v=w/2'])
@pytest.mark.parametrize('width', WIDTHS)
@pytest.mark.parametrize('dtype', DTYPES)
def test_fused_attention_matches_reference(dtype, width, value_div,
                                           backward):
    """Inputs in ``dtype``; ``v=w/2`` is gaussian mode's narrower value
    (the fused path zero-pads it to one head width)."""
    check_attention(DEVICE, dtype, width, width // value_div, backward)


def check_block(device: str, dtype: torch.dtype, mode: str,
                width: int) -> None:
    """NonLocal2D fused against reference, under autocast in ``dtype``.

    The head width is ``in_channels // 2`` in ``embedded_gaussian`` and
    ``in_channels`` (queries and keys are the input) in ``gaussian``.
    ``conv_out`` is not zero (``zeros_init=False``), so that the attention
    reaches the output, and the embeddings' std gives logits of a standard
    deviation near 2. The parameters' gradients, which only the attention
    feeds, are compared tensor by tensor.
    """
    channels = 2 * width if mode == 'embedded_gaussian' else width
    kwargs = dict(mode=mode, zeros_init=False, std=(2 / channels)**0.5)
    fused = NonLocal2D(channels, attn_impl='fused', **kwargs).to(device)
    ref = NonLocal2D(channels, attn_impl='reference', **kwargs).to(device)
    ref.load_state_dict(fused.state_dict())
    # gaussian's logits are the unscaled x_i . x_j: with unit inputs the
    # diagonal (~C) makes the softmax one-hot; std sqrt(2 / C) puts it near
    # 2, so every key carries weight.
    x_std = (2 / channels)**0.5 if mode == 'gaussian' else 1.0
    x = x_std * torch.randn(BATCH, channels, *BLOCK_HW, device=device)
    grad = torch.randn_like(x)
    deltas = []
    for block in (fused, ref):
        inp = x.clone().requires_grad_()
        with _autocast(device, dtype):
            out = block(inp)
        assert out.dtype == torch.float32
        out.backward(grad)
        deltas.append((out - x).detach())  # the block's branch
    positions = BLOCK_HW[0] * BLOCK_HW[1]
    bound = rtol(dtype, width * positions, roundings=4)
    err = rel_err(*deltas)
    assert err <= bound, f'output: error {err:.3e} > {bound:.3e}'
    # A weight gradient sums over the batch's positions on top.
    bound = rtol(dtype, width * positions * BATCH * positions, roundings=4)
    # The key bias under the softmax adds the same value to a row of
    # logits: its gradient is zero in exact arithmetic, and both paths
    # return rounding noise for it, held to the largest gradient's scale.
    zero = {'phi.conv.bias'} if mode == 'embedded_gaussian' else set()
    scale = max(p.grad.double().norm().item() for p in ref.parameters())
    for (name, got), want in zip(fused.named_parameters(), ref.parameters()):
        assert torch.isfinite(got.grad).all(), name
        err = (got.grad.double() - want.grad.double()).norm().item()
        norm = scale if name in zero else want.grad.double().norm().item()
        assert err <= bound * norm, (
            f'grad {name}: error {err:.3e} > {bound * norm:.3e}')


@pytest.mark.parametrize('width', WIDTHS)
@pytest.mark.parametrize('mode', ['embedded_gaussian', 'gaussian'])
@pytest.mark.parametrize('dtype', DTYPES)
def test_fused_block_matches_reference(dtype, mode, width):
    """fp32 without autocast; fp16 and bf16 under ``torch.autocast``."""
    check_block(DEVICE, dtype, mode, width)


# b. backends, and no map


def test_backend_table():
    """A fused SDPA backend (flash, memory-efficient or cuDNN) takes every
    width in fp16 and bf16, with and without gradients.

    Where a torch build's kernels refuse a width, the blocks still run the
    chunked kernel rather than the reference
    (:func:`test_fused_attention_never_builds_the_map`), but this test
    fails: that build loses the fused kernels' speed.
    """
    device = torch.device(DEVICE)
    props = torch.cuda.get_device_properties(device)
    print(f'\nSDPA backends on {props.name} (sm_{props.major}{props.minor}), '
          f'torch {torch.__version__}:')
    print('| dtype | width | forward | forward + backward |')
    print('|---|---|---|---|')
    dtypes = (torch.float32, ) + HALF_DTYPES
    forward = backend_table(device, dtypes, WIDTHS, grad=False)
    training = backend_table(device, dtypes, WIDTHS, grad=True)
    missing = []
    for (dtype, width, fwd), (_, _, bwd) in zip(forward, training):
        print(f'| {dtype} | {width} | {fwd} | {bwd} |')
        if dtype != 'float32' and 'chunked' in (fwd, bwd):
            missing.append(f'{dtype} width {width}: forward {fwd}, '
                           f'forward + backward {bwd}')
    assert not missing, ('no fused SDPA backend takes: ' + '; '.join(missing))


def _min_queries(width: int) -> int:
    """Positions at which one N x N map dwarfs every O(N * width) tensor.

    The fused path holds about ten ``[N, width]`` tensors at its peak
    (padded copies of q, k and v, the output, the incoming gradient, the
    three input gradients and the kernels' fp32 accumulators), about
    ``40 * N * width`` bytes; with ``N = 64 * width`` that is ``0.6 N^2``
    bytes against the ``N^2`` of a quarter fp32 map.
    """
    return max(16384, 64 * width)


@pytest.mark.parametrize('backward', [False, True],
                         ids=['forward', 'backward'])
@pytest.mark.parametrize('width', WIDTHS)
@pytest.mark.parametrize('dtype', DTYPES)
def test_fused_attention_never_builds_the_map(dtype, width, backward,
                                              monkeypatch):
    """``impl='fused'`` runs a fused backend or the chunked kernel, never
    the reference: the reference is patched to raise, and the peak extra
    memory stays below a quarter of one ``N x N`` fp32 map (torch's math
    SDPA backend is never enabled: each call runs one fused backend alone).
    """
    monkeypatch.setattr(attention_ops, '_reference_softmax',
                        _reference_is_forbidden)
    queries = _min_queries(width)

    def inputs(length):
        return [
            torch.randn(1, length, width, device=DEVICE,
                        dtype=dtype).requires_grad_(backward)
            for _ in range(3)
        ]

    def step(q, k, v):
        with torch.set_grad_enabled(backward):
            out = softmax_attention(q, k, v, scale=width**-0.5,
                                    impl='fused')
        if backward:
            out.backward(torch.ones_like(out))

    step(*inputs(64))  # warm-up: backend probe, cuBLAS workspace
    q, k, v = inputs(queries)
    extra = _peak_extra_bytes(lambda: step(q, k, v))
    map_bytes = 4 * queries**2
    print(f'\nfused softmax_attention {str(dtype)[6:]} N={queries} '
          f'd={width} {"fwd+bwd" if backward else "fwd"}: peak extra '
          f'{extra / 1e6:.0f} MB = {extra / map_bytes:.3f} x one '
          f'N x N fp32 map')
    assert extra < MAP_FRACTION * map_bytes


# c. one res3 block


def _res3_block_extra(impl: str, dtype: torch.dtype) -> tuple:
    """Peak extra memory of forward + backward of NonLocal2D(512) at res3,
    and the bytes of one N x N fp32 map."""
    channels, height, width = RES3
    block = NonLocal2D(channels, mode='embedded_gaussian',
                       attn_impl=impl).to(DEVICE)
    x = torch.randn(1, channels, height, width, device=DEVICE,
                    requires_grad=True)
    grad = torch.randn_like(x)

    def step():
        with _autocast(DEVICE, dtype):
            out = block(x)
        out.backward(grad)

    step()  # warm-up: kernels, workspaces, backend probe
    block.zero_grad(set_to_none=True)
    x.grad = None
    extra = _peak_extra_bytes(step)
    positions = height * width
    map_bytes = 4 * positions**2
    print(f'\nres3 NonLocal2D({channels}) embedded_gaussian {impl} '
          f'{str(dtype)[6:]} [1, {channels}, {height}, {width}] '
          f'(N={positions}), forward + backward: peak extra '
          f'{extra / 1e6:.0f} MB = {extra / map_bytes:.3f} x one N x N fp32 '
          f'map ({map_bytes / 1e9:.2f} GB)')
    return extra, map_bytes


@pytest.mark.parametrize('dtype', DTYPES)
def test_res3_block_peak_memory(dtype):
    """The fused block stays below a quarter of one N x N fp32 map
    (fp32, and autocast fp16 / bf16)."""
    extra, map_bytes = _res3_block_extra('fused', dtype)
    assert extra < MAP_FRACTION * map_bytes


def test_res3_reference_block_builds_the_map():
    """The yardstick: the measurement sees the reference path's maps."""
    extra, map_bytes = _res3_block_extra('reference', torch.float32)
    assert extra > map_bytes
