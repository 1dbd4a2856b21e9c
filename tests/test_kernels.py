"""Which softmax kernel runs, and that none builds the ``[N, M]`` map.

The fused path runs the symmetric tile-pair kernel where the queries are the
keys (CPU), a fused SDPA backend where one takes the input, and the
query-chunked kernel (:mod:`nonlocal_plugin.ops.chunked`) otherwise; the
reference path is never a fallback, and errors (out of memory above all)
are never swallowed. ``'auto'`` builds the map only below the measured
crossover.
"""
import pytest
import torch

from nonlocal_plugin import DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.ops import (
    attention,
    chunked,
    materialised,
    sdpa,
    softmax_attention,
    symmetric,
)

OOM = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)


def _inputs(batch, queries, keys, qk, v, dtype=torch.float64):
    return [
        torch.randn(batch, n, c, dtype=dtype, requires_grad=True)
        for n, c in ((queries, qk), (keys, qk), (keys, v))
    ]


def _grads(fn, tensors, grad_out):
    out = fn(*tensors)
    return (out, *torch.autograd.grad(out, tensors, grad_out))


@pytest.mark.parametrize('batch, queries, keys, qk, v', [
    (1, 37, 37, 8, 8),
    (2, 50, 13, 4, 24),  # sub-sampled keys, value wider than query/key
    (3, 64, 70, 16, 5),
])
@pytest.mark.parametrize('tile', [64, 1 << 22])  # many chunks, one chunk
def test_chunked_kernel_equals_reference(monkeypatch, batch, queries, keys,
                                         qk, v, tile):
    monkeypatch.setattr(chunked, 'TILE_ELEMENTS', tile)
    tensors = _inputs(batch, queries, keys, qk, v)
    grad_out = torch.randn(batch, queries, v, dtype=torch.float64)
    got = _grads(
        lambda q, k, v_: chunked.chunked_softmax_attention(q, k, v_, 0.7),
        tensors, grad_out)
    want = _grads(
        lambda q, k, v_: attention._reference_softmax(q, k, v_, 0.7),
        tensors, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_chunked_kernel_gradcheck():
    q, k, v = _inputs(2, 9, 7, 3, 4)
    assert torch.autograd.gradcheck(
        lambda *t: chunked.chunked_softmax_attention(*t, 0.5), (q, k, v))


@pytest.fixture
def no_fused_backend(monkeypatch):
    """No SDPA backend takes any input; the reference path must not run."""
    monkeypatch.setattr(attention, 'fused_backend', lambda *a, **k: None)

    def refuse(*args, **kwargs):
        raise AssertionError('the reference path ran')

    monkeypatch.setattr(attention, '_reference_softmax', refuse)


def test_no_fused_kernel_means_chunked_not_reference(no_fused_backend):
    tensors = _inputs(2, 40, 40, 8, 8, dtype=torch.float32)
    out = softmax_attention(*tensors, scale=0.3, impl='fused')
    logits = torch.matmul(tensors[0], tensors[1].transpose(1, 2)) * 0.3
    want = torch.matmul(logits.softmax(-1), tensors[2])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('make', [
    lambda **kw: NonLocal2D(16, **kw),
    lambda **kw: NonLocal2D(16, mode='gaussian', **kw),
    lambda **kw: NonLocal2D(16, True, **kw),
    lambda **kw: DisentangledNonLocal(16, **kw),
])
def test_block_on_chunked_kernel_matches_reference(monkeypatch, make):
    monkeypatch.setattr(attention, 'fused_backend', lambda *a, **k: None)
    fused, reference = make(attn_impl='fused'), make(attn_impl='reference')
    with torch.no_grad():
        for p in fused.parameters():
            p.normal_(0, 0.2)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(2, 16, 6, 8, dtype=torch.float64)
    fused.double(), reference.double()
    out, want = fused(x), reference(x)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    want.square().sum().backward()
    for (name, a), b in zip(fused.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10,
                                   msg=name)


def _saved_numels(fn):
    """Sizes of the tensors autograd saves for the backward of ``fn()``."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


# 1200 positions: 'auto' builds maps only up to MATERIALISE_ELEMENTS.
@pytest.mark.parametrize('impl, builds_map', [('fused', False),
                                              ('auto', False),
                                              ('reference', True)])
@pytest.mark.parametrize('chunked_only', [False, True])
def test_backward_never_keeps_the_map(monkeypatch, impl, builds_map,
                                      chunked_only):
    if chunked_only:
        monkeypatch.setattr(attention, 'fused_backend',
                            lambda *a, **k: None)
    block = NonLocal2D(8, attn_impl=impl)
    x = torch.randn(1, 8, 30, 40, requires_grad=True)
    positions = 30 * 40
    sizes = _saved_numels(lambda: block(x))
    # Every saved tensor is O(N * C); the map would be N * N = 1.44M.
    assert (max(sizes) >= positions**2) is builds_map, max(sizes)


@pytest.mark.parametrize('error', [OOM('CUDA out of memory'),
                                   RuntimeError('some kernel failure')])
def test_kernel_errors_propagate(monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    # The kernel accepts these inputs (the probe's answer is cached) ...
    for width in (8, 16):
        assert sdpa.fused_backend(torch.device('cpu'), torch.float32, width,
                                  grad=True) is not None
    # ... and then fails while running: the error must reach the caller.
    monkeypatch.setattr(attention.F, 'scaled_dot_product_attention', fail)
    tensors = _inputs(1, 16, 16, 8, 8, dtype=torch.float32)
    with pytest.raises(type(error), match=str(error)):
        softmax_attention(*tensors, impl='fused')
    with pytest.raises(type(error)):
        NonLocal2D(16, attn_impl='fused')(torch.randn(1, 16, 4, 4))


def test_backend_probe_refuses_what_a_kernel_refuses(monkeypatch):
    sdpa._accepts.cache_clear()

    def refuse(*args, **kwargs):
        raise RuntimeError('No available kernel. Aborting execution.')

    monkeypatch.setattr(sdpa.F, 'scaled_dot_product_attention', refuse)
    try:
        assert sdpa.fused_backend(torch.device('cpu'), torch.float32, 24,
                                  grad=True) is None
    finally:
        sdpa._accepts.cache_clear()


def test_cpu_backend_table_names_a_backend_for_fp32():
    table = sdpa.backend_table(torch.device('cpu'), [torch.float32],
                               [64, 512])
    assert [row[2] for row in table] == ['flash', 'flash']


@pytest.mark.skipif(not hasattr(torch.backends.cuda, 'sdp_kernel'),
                    reason='this torch has no torch.backends.cuda.sdp_kernel')
def test_pre_2_3_backend_switch(monkeypatch):
    # torch 2.1-2.2 have no torch.nn.attention.sdpa_kernel; the legacy
    # switch must still pick the flash kernel with no math fallback.
    monkeypatch.setattr(sdpa, 'sdpa_kernel', None)
    monkeypatch.setattr(sdpa, 'SDPBackend', None)
    sdpa._accepts.cache_clear()
    try:
        assert sdpa.fused_backend(torch.device('cpu'), torch.float32,
                                  16) == 'flash'
        tensors = _inputs(1, 20, 20, 16, 16, dtype=torch.float32)
        out = softmax_attention(*tensors, impl='fused')
        want = attention._reference_softmax(*tensors, 1.0)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    finally:
        sdpa._accepts.cache_clear()



@pytest.mark.parametrize('batch, positions, width, v_width', [
    (1, 37, 8, 8),
    (2, 50, 12, 5),  # the gaussian block's shape: value narrower
    (3, 23, 4, 9),
])
@pytest.mark.parametrize('tile', [49, 1 << 18])  # 7-row tiles, one tile
def test_symmetric_kernel_equals_reference(monkeypatch, batch, positions,
                                           width, v_width, tile):
    monkeypatch.setattr(symmetric, 'TILE_ELEMENTS', tile * batch)
    x = torch.randn(batch, positions, width, dtype=torch.float64,
                    requires_grad=True)
    v = torch.randn(batch, positions, v_width, dtype=torch.float64,
                    requires_grad=True)
    grad_out = torch.randn(batch, positions, v_width, dtype=torch.float64)
    got = _grads(lambda x_, v_: symmetric.symmetric_softmax_attention(
        x_, v_, 0.7), (x, v), grad_out)
    want = _grads(lambda x_, v_: attention._reference_softmax(
        x_, x_, v_, 0.7), (x, v), grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_symmetric_kernel_gradcheck(monkeypatch):
    monkeypatch.setattr(symmetric, 'TILE_ELEMENTS', 16)  # 4-row tiles
    x = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 11, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: symmetric.symmetric_softmax_attention(*t, 0.5), (x, v))


@pytest.mark.parametrize('sub_sample, kernel', [(False, 'symmetric'),
                                                (True, 'chunked')])
def test_gaussian_block_runs_the_kernel_for_its_shape(monkeypatch, sub_sample,
                                                      kernel):
    """Without sub-sampling the queries are the keys: the symmetric kernel.
    Sub-sampled, the value is narrower than the keys: chunked, unpadded."""
    ran = []
    for name in ('symmetric_softmax_attention', 'chunked_softmax_attention',
                 '_sdpa', '_reference_softmax'):
        real = getattr(attention, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            ran.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(attention, name, spy)
    block = NonLocal2D(16, sub_sample, mode='gaussian', attn_impl='fused')
    block(torch.randn(1, 16, 8, 10)).sum().backward()
    assert ran == [f'{kernel}_softmax_attention']


@pytest.mark.parametrize('impl, kind, n, m, cq, cv, device, builds', [
    ('auto', 'softmax', 512, 512, 64, 64, 'cpu', True),
    ('auto', 'softmax', 1024, 1024, 128, 128, 'cpu', False),
    ('auto', 'softmax', 4200, 4200, 512, 512, 'cpu', False),
    ('auto', 'softmax', 1024, 256, 256, 128, 'cpu', True),
    ('auto', 'softmax', 512, 512, 64, 64, 'cuda', True),
    ('auto', 'softmax', 16800, 16800, 256, 256, 'cuda', False),
    ('auto', 'dot_product', 64, 64, 256, 256, 'cpu', True),  # N < C
    ('auto', 'dot_product', 4096, 4096, 256, 256, 'cpu', False),
    ('auto', 'concatenation', 8, 8, 4, 4, 'cpu', False),
    ('fused', 'softmax', 8, 8, 4, 4, 'cpu', False),
    ('reference', 'softmax', 4200, 4200, 512, 512, 'cpu', True),
])
def test_auto_builds_the_map_only_below_the_crossover(impl, kind, n, m, cq,
                                                       cv, device, builds):
    limit = attention.MATERIALISE_ELEMENTS['cpu']
    assert 512 * 512 <= limit < 1024 * 1024  # what the rows above assume
    assert attention.materialises(impl, kind, torch.device(device), n, m, cq,
                                  cv) is builds


def test_auto_equals_fused_and_reference_on_both_sides(monkeypatch):
    """Small input: the map (auto == reference); with the crossover at 0
    the same input runs fused. Both agree with the textbook path."""
    q, k, v = _inputs(2, 30, 30, 8, 8)
    want = attention._reference_softmax(q, k, v, 0.4)
    small = softmax_attention(q, k, v, scale=0.4)
    monkeypatch.setitem(attention.MATERIALISE_ELEMENTS, 'cpu', 0)
    large = softmax_attention(q, k, v, scale=0.4)
    torch.testing.assert_close(small, want, rtol=0, atol=0)
    torch.testing.assert_close(large, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('kernel', ['symmetric', 'chunked'])
def test_tiny_weight_floor_stays_below_fp32_resolution(monkeypatch, kernel):
    """Gaussian-like logits hundreds apart: the weights floored at e^-40
    (no subnormals) move the outputs by far less than fp32's eps."""
    monkeypatch.setattr(symmetric, 'TILE_ELEMENTS', 64)
    monkeypatch.setattr(chunked, 'TILE_ELEMENTS', 64)
    x = torch.randn(1, 40, 16, dtype=torch.float64) * 6  # |logits| ~ 150
    x.requires_grad_(True)
    v = torch.randn(1, 40, 8, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(1, 40, 8, dtype=torch.float64)
    fused = (symmetric.symmetric_softmax_attention if kernel == 'symmetric'
             else lambda x_, v_, s: chunked.chunked_softmax_attention(
                 x_, x_, v_, s))
    got = _grads(lambda x_, v_: fused(x_, v_, 1.0), (x, v), grad_out)
    want = _grads(lambda x_, v_: attention._reference_softmax(x_, x_, v_, 1.0),
                  (x, v), grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('batch, queries, keys, qk, v, scale', [
    (1, 37, 37, 8, 8, 0.7),
    (2, 50, 13, 4, 24, 1.0),  # sub-sampled keys, wider value, no scale
])
def test_materialised_kernel_equals_reference(batch, queries, keys, qk, v,
                                              scale):
    tensors = _inputs(batch, queries, keys, qk, v)
    grad_out = torch.randn(batch, queries, v, dtype=torch.float64)
    got = _grads(lambda *t: materialised.materialised_softmax_attention(
        *t, scale), tensors, grad_out)
    want = _grads(lambda *t: attention._reference_softmax(*t, scale),
                  tensors, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda *t: materialised.materialised_softmax_attention(*t, scale),
        [t.detach()[:, :9].requires_grad_() for t in tensors])


def test_materialised_kernel_keeps_one_map_for_the_backward():
    q, k, v = _inputs(1, 300, 300, 8, 8, dtype=torch.float32)
    sizes = _saved_numels(
        lambda: materialised.materialised_softmax_attention(q, k, v, 0.5))
    assert sorted(sizes)[-2:] == [300 * 8, 300 * 300]  # one map, no logits
    textbook = _saved_numels(
        lambda: attention._reference_softmax(q, k, v, 0.5))
    assert max(textbook) == 300 * 300


def test_auto_limit_for_queries_that_are_keys():
    """gaussian without sub-sampling: the symmetric kernel's own crossover."""
    cpu = torch.device('cpu')
    n = 1024  # N * M = 2^20: above the general limit, within the shared one
    assert not attention.materialises('auto', 'softmax', cpu, n, n, 256, 128)
    assert attention.materialises('auto', 'softmax', cpu, n, n, 256, 128,
                                  shared=True)
    assert not attention.materialises('auto', 'softmax', cpu, 2 * n, 2 * n,
                                      256, 128, shared=True)
