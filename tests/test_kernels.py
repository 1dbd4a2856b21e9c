"""Which softmax kernel runs, and that none builds the ``[N, M]`` map.

The fused path runs a fused SDPA backend where one takes the input and the
query-chunked kernel (:mod:`nonlocal_plugin.ops.chunked`) otherwise; the
reference path is never a fallback, and errors (out of memory above all)
are never swallowed.
"""
import pytest
import torch

from nonlocal_plugin import DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.ops import attention, chunked, sdpa, softmax_attention

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
    out = softmax_attention(*tensors, scale=0.3)
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
    fused, reference = make(), make(attn_impl='reference')
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


@pytest.mark.parametrize('impl, builds_map', [('fused', False),
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
        softmax_attention(*tensors)
    with pytest.raises(type(error)):
        NonLocal2D(16)(torch.randn(1, 16, 4, 4))


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
        out = softmax_attention(*tensors)
        want = attention._reference_softmax(*tensors, 1.0)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    finally:
        sdpa._accepts.cache_clear()

