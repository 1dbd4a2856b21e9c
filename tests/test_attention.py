"""The fused attention paths against the materialising reference path."""
import pytest
import torch
from conftest import assert_grads_close, exactly_zero_grads, rel_err, tolerance

from nonlocal_plugin import DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.blocks.non_local import MODES
from nonlocal_plugin.ops import (
    concatenation_attention,
    dot_product_attention,
    softmax_attention,
)

BATCH, QUERIES = 2, 168  # 12 x 14 positions


def _pair(cls, dtype, **kwargs):
    fused = cls(32, zeros_init=False, std=0.2, attn_impl='fused',
                **kwargs).to(dtype)
    reference = cls(32, zeros_init=False, std=0.2, attn_impl='reference',
                    **kwargs).to(dtype)
    reference.load_state_dict(fused.state_dict())
    return fused, reference


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16],
                         ids=['fp32', 'bf16'])
@pytest.mark.parametrize('num_keys', [168, 42], ids=['full', 'ss'])
@pytest.mark.parametrize('mode', MODES)
def test_fused_kernel_equals_reference(mode, num_keys, dtype):
    """Each kernel, forward and backward, at the precision it is given.

    ``num_keys=42`` is a sub-sampled key set (a quarter of the queries).
    Both paths accumulate in fp32 and return fp32, so the outputs are held
    to fp32's tolerance for bf16 inputs too. The longest sum is that of the
    concatenation weight's gradient, over every (query, key) pair of the
    batch: ``K = B * N * M`` terms (:func:`conftest.tolerance`). The
    gradients come back in the inputs' dtype, one rounding of bf16: where the
    two fp32 values lie on either side of a rounding boundary they differ by
    one ulp.
    """
    q, k, v = (torch.randn(BATCH, length, 24, dtype=dtype, requires_grad=True)
               for length in (QUERIES, num_keys, num_keys))
    w = torch.randn(48, dtype=dtype, requires_grad=True)
    outs, grads = [], []
    for impl in ('fused', 'reference'):
        out = _KERNELS[mode](q, k, v, w, impl)
        assert out.dtype == torch.float32  # the caller rounds
        outs.append(out)
        grads.append(torch.autograd.grad(out, (q, k, v, w),
                                         torch.ones_like(out) / 7,
                                         allow_unused=True))
    terms = BATCH * QUERIES * num_keys
    assert rel_err(*outs) <= tolerance(torch.float32, terms)
    for name, got, want in zip('qkvw', *grads):
        if want is not None:
            assert rel_err(got, want) <= tolerance(dtype, terms), name


_KERNELS = {
    'gaussian': lambda q, k, v, w, impl: softmax_attention(
        q, k, v, scale=1.0, impl=impl),
    'embedded_gaussian': lambda q, k, v, w, impl: softmax_attention(
        q, k, v, scale=24**-0.5 / 0.05, impl=impl),
    'dot_product': lambda q, k, v, w, impl: dot_product_attention(
        q, k, v, impl=impl),
    'concatenation': lambda q, k, v, w, impl: concatenation_attention(
        q, k, v, w, impl=impl),
}


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16],
                         ids=['fp32', 'bf16'])
@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'ss'])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('cls', [NonLocal2D, DisentangledNonLocal])
def test_fused_block_equals_reference_block(cls, mode, sub_sample, dtype):
    """Whole blocks, forward and backward.

    In bf16 the blocks' convs run in bf16 too: where the two kernels' outputs
    round to neighbouring bf16 values, the convs carry that one-ulp step on,
    so the bound is bf16's rounding, not the kernels' fp32 sums. The longest
    sum is a projection weight's gradient: over the ``B * N`` positions, of
    terms that each sum over the ``M`` keys (:func:`conftest.tolerance`).
    Gradients that are zero in exact arithmetic are held to the module's
    gradient scale (:func:`conftest.exactly_zero_grads`).
    """
    fused, reference = _pair(cls, dtype, mode=mode, sub_sample=sub_sample)
    x = torch.randn(BATCH, 32, 12, 14, dtype=dtype)
    keys = QUERIES // 4 if sub_sample else QUERIES
    rtol = tolerance(dtype, BATCH * QUERIES * keys)
    x_fused = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    out_fused, out_ref = fused(x_fused), reference(x_ref)
    # Compare the attention branch, not the residual that dominates the sum.
    assert rel_err(out_fused - x, out_ref - x) <= rtol
    grad = torch.randn_like(out_ref)
    out_fused.backward(grad)
    out_ref.backward(grad)
    assert rel_err(x_fused.grad, x_ref.grad) <= rtol
    assert_grads_close(fused.named_parameters(), reference.parameters(),
                       rtol=rtol, zero=exactly_zero_grads(reference))


def _qkv(n=50, m=37, c=8, cv=6, dtype=torch.float64):
    return [torch.randn(2, length, width, dtype=dtype, requires_grad=True)
            for length, width in ((n, c), (m, c), (m, cv))]


def _explicit(q, k, v, weights):
    """The textbook sum, one query at a time."""
    return torch.stack([
        torch.stack([weights(q[b, i], k[b]) @ v[b] for i in range(q.shape[1])])
        for b in range(q.shape[0])
    ])


def test_softmax_attention_is_the_textbook_sum():
    q, k, v = _qkv()
    expected = _explicit(q, k, v, lambda qi, kb: (kb @ qi * 0.3).softmax(0))
    for impl in ('fused', 'reference'):
        torch.testing.assert_close(
            softmax_attention(q, k, v, scale=0.3, impl=impl), expected)


def test_dot_product_attention_is_the_textbook_sum():
    q, k, v = _qkv()
    expected = _explicit(q, k, v, lambda qi, kb: kb @ qi / kb.shape[0])
    for impl in ('fused', 'reference'):
        torch.testing.assert_close(
            dot_product_attention(q, k, v, impl=impl), expected)


def test_concatenation_attention_is_the_textbook_sum_with_grads():
    q, k, v = _qkv()
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)

    def weights(qi, kb):
        pairs = torch.cat([qi.expand(kb.shape[0], -1), kb], dim=1)
        return (pairs @ w).relu() / kb.shape[0]

    expected = _explicit(q, k, v, weights)
    grads = torch.autograd.grad(expected.square().sum(), (q, k, v, w))
    for impl in ('fused', 'reference'):
        out = concatenation_attention(q, k, v, w, impl=impl)
        torch.testing.assert_close(out, expected)
        for got, want in zip(
                torch.autograd.grad(out.square().sum(), (q, k, v, w)), grads):
            torch.testing.assert_close(got, want)


def test_concatenation_chunks_cover_every_query(monkeypatch):
    # Force many small chunks, with a ragged last one: 3 of the 50 queries
    # against the 37 keys of both images.
    from nonlocal_plugin.ops import chunked
    monkeypatch.setattr(chunked, 'TILE_ELEMENTS', 2 * 37 * 3)
    assert chunked.chunk_rows(2, 37) == 3
    q, k, v = _qkv()
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    inputs = (q, k, v, w)
    for args in (inputs, ):
        torch.autograd.gradcheck(
            lambda *a: concatenation_attention(*a, impl='fused'), args)
    torch.testing.assert_close(
        concatenation_attention(*inputs, impl='fused'),
        concatenation_attention(*inputs, impl='reference'))
