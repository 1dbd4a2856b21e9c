"""Behaviour of the blocks on their own: identity, gradients, peers, errors."""
import itertools
import math

import pytest
import torch
from conftest import (
    assert_close_scaled,
    exactly_zero_grads,
    rel_err,
    tolerance,
)
from mmcv.cnn import ContextBlock as MmcvContextBlock
from mmcv.cnn import NonLocal1d, NonLocal2d, NonLocal3d
from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d
from torch.nn.modules.batchnorm import _BatchNorm

from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    NonLocal1D,
    NonLocal2D,
    NonLocal3D,
)
from nonlocal_plugin.blocks._pointwise import plain_pointwise
from nonlocal_plugin.blocks.non_local import MODES

SHAPES = {1: (2, 16, 23), 2: (2, 16, 9, 10), 3: (2, 16, 3, 6, 8)}
OURS = {1: NonLocal1D, 2: NonLocal2D, 3: NonLocal3D}
MMCV = {1: NonLocal1d, 2: NonLocal2d, 3: NonLocal3d}
GC_FUSIONS = [('channel_add', ), ('channel_mul', ), ('channel_gate', ),
              ('channel_add', 'channel_mul'),
              ('channel_gate', 'channel_add')]


def _nl_cases():
    for dim, mode, sub_sample, norm in itertools.product(
            (1, 2, 3), MODES, (False, True), (False, True)):
        yield pytest.param(dim, mode, sub_sample, norm,
                           id=f'{dim}d-{mode}-ss{int(sub_sample)}-bn{int(norm)}')


def _all_blocks():
    """(name, factory, input shape) for every block and option combination."""
    for dim, mode, sub_sample, norm in itertools.product(
            (1, 2, 3), MODES, (False, True), (False, True)):
        norm_cfg = dict(type=f'BN{dim}d') if norm else None
        for cls in (OURS[dim], DisentangledNonLocal):
            kwargs = dict(mode=mode, sub_sample=sub_sample, norm_cfg=norm_cfg)
            if cls is DisentangledNonLocal:
                kwargs['dim'] = dim
            yield (f'{cls.__name__}-{dim}d-{mode}-ss{int(sub_sample)}'
                   f'-bn{int(norm)}', cls, kwargs, SHAPES[dim])
    for unary, pairwise in ((True, False), (False, True)):
        yield (f'DNL-pairwise{int(pairwise)}-unary{int(unary)}',
               DisentangledNonLocal,
               dict(use_pairwise=pairwise, use_unary=unary), SHAPES[2])
    for pooling, fusions in itertools.product(('att', 'avg'), GC_FUSIONS):
        yield (f'ContextBlock-{pooling}-{"+".join(fusions)}', ContextBlock,
               dict(ratio=1 / 4, pooling_type=pooling,
                    fusion_types=fusions), SHAPES[2])


ALL_BLOCKS = [pytest.param(*case[1:], id=case[0]) for case in _all_blocks()]


def _forward_rtol(shape):
    """fp32 tolerance of a block's output (:func:`conftest.tolerance`).

    The longest sum of the forward is the attention's over the key
    positions nested in a 1x1 conv's over the channels: at most
    ``positions * channels`` terms.
    """
    return tolerance(torch.float32, math.prod(shape[1:]))


def _randomise(module):
    """Non-zero weights everywhere, so nothing is the identity any more."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
        for m in module.modules():
            if isinstance(m, (torch.nn.LayerNorm, _BatchNorm)):
                # Positive scales, so ReLUs after a norm stay alive.
                m.weight.uniform_(0.5, 1.5)
        for name, buf in module.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 2.0)
            elif name.endswith('running_mean'):
                buf.normal_()
    return module


@pytest.mark.parametrize('cls,kwargs,shape', ALL_BLOCKS)
def test_identity_at_init(cls, kwargs, shape):
    block = cls(16, **kwargs)
    x = torch.randn(shape)
    for mode in ('train', 'eval'):
        getattr(block, mode)()
        out = block(x)
        assert out.shape == x.shape
        if 'channel_mul' in kwargs.get('fusion_types', ()):
            # mmcv's channel_mul scales by sigmoid(0) = 0.5 at init (kept
            # for checkpoint compatibility; channel_gate is the fix).
            torch.testing.assert_close(out, x * 0.5, rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(out, x, rtol=0, atol=0)


@pytest.mark.parametrize('cls,kwargs,shape', ALL_BLOCKS)
def test_every_parameter_gets_a_gradient(cls, kwargs, shape):
    # Eval mode: a norm in train mode centres each channel over the batch,
    # which would zero the gradient of anything adding a per-channel constant
    # (g's bias under a softmax) and hide a real break in the graph.
    block = _randomise(cls(16, **kwargs)).eval()
    x = torch.randn(shape, requires_grad=True)
    block(x).square().sum().backward()
    # Gradients that are zero in exact arithmetic (a softmax ignores a bias
    # that shifts a whole row of logits; DNL's whitening removes the query
    # and key biases) come out as rounding noise. The noise of a weight
    # gradient's sum over the B * N positions of per-key terms is at most
    # `tol` of the module's gradient scale; every other gradient must stand
    # clear of it.
    exactly_zero = exactly_zero_grads(block)
    positions = math.prod(shape[2:])
    tol = tolerance(torch.float32, shape[0] * positions * positions)
    scale = max(p.grad.abs().max().item() for p in block.parameters())
    for name, param in block.named_parameters():
        assert param.grad is not None, f'{name} got no gradient'
        assert torch.isfinite(param.grad).all(), name
        largest = param.grad.abs().max().item()
        if name in exactly_zero:
            assert largest <= tol * scale, f'{name}: {largest / scale:.1e}'
        else:
            assert largest > tol * scale, f'{name}: {largest / scale:.1e}'
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize('dim,mode,sub_sample,norm', _nl_cases())
def test_nonlocal_matches_mmcv(dim, mode, sub_sample, norm):
    norm_cfg = dict(type=f'BN{dim}d') if norm else None
    peer = _randomise(MMCV[dim](16, mode=mode, sub_sample=sub_sample,
                                norm_cfg=norm_cfg)).eval()
    ours = OURS[dim](16, mode=mode, sub_sample=sub_sample,
                     norm_cfg=norm_cfg).eval()
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(SHAPES[dim])
    expected = peer(x)
    assert_close_scaled(ours(x), expected, _forward_rtol(SHAPES[dim]))
    assert (ours(x) - x).abs().max() > 1e-3  # the branch is not trivial


@pytest.mark.parametrize('mode', MODES)
def test_custom_conv_takes_the_module_path_and_matches_mmcv(mode):
    # ConvWS is not a plain 1x1 conv: the stacked-GEMM projection must not
    # take it, and the block must still equal mmcv's with the same conv.
    conv_cfg = dict(type='ConvWS')
    peer = _randomise(NonLocal2d(16, mode=mode, conv_cfg=conv_cfg)).eval()
    ours = NonLocal2D(16, mode=mode, conv_cfg=conv_cfg).eval()
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(SHAPES[2])
    assert plain_pointwise(ours.g) is None
    # Weight standardisation makes the embeddings much larger than the
    # plain init does, so compare in the norm of the output.
    assert rel_err(ours(x), peer(x)) <= _forward_rtol(SHAPES[2])


@pytest.mark.parametrize('mode', ['embedded_gaussian', 'dot_product',
                                  'concatenation'])
@pytest.mark.parametrize('temperature', [0.05, 1.0])
def test_dnl_matches_mmseg(mode, temperature):
    peer = _randomise(DisentangledNonLocal2d(
        16, mode=mode, temperature=temperature)).eval()
    ours = DisentangledNonLocal(16, mode=mode,
                                temperature=temperature).eval()
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(SHAPES[2])
    assert_close_scaled(ours(x), peer(x.clone()), _forward_rtol(SHAPES[2]))


def test_dnl_leaves_its_input_alone_where_mmseg_does_not():
    # In gaussian mode mmseg whitens a view of the input in place, so its
    # caller's tensor (and its own residual) changes.
    peer = _randomise(DisentangledNonLocal2d(16, mode='gaussian',
                                             temperature=0.05))
    ours = DisentangledNonLocal(16, mode='gaussian')
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(SHAPES[2])
    x_peer = x.clone()
    peer(x_peer)
    assert not torch.equal(x_peer, x)
    x_ours = x.clone()
    ours(x_ours)
    assert torch.equal(x_ours, x)


@pytest.mark.parametrize('mode', MODES)
def test_dnl_sub_sample_pools_mask_to_key_positions(mode):
    # mmseg's block fails here: its unary mask has H*W entries, its values
    # H*W/4.
    peer = DisentangledNonLocal2d(16, mode=mode, temperature=0.05,
                                  sub_sample=True)
    with pytest.raises(RuntimeError):
        peer(torch.randn(SHAPES[2]))
    block = _randomise(DisentangledNonLocal(16, mode=mode, sub_sample=True,
                                            use_pairwise=False))
    x = torch.randn(1, 16, 8, 8)
    # The unary term alone: softmax over the pooled mask, applied to the
    # pooled values, broadcast to every position.
    mask = torch.nn.functional.max_pool2d(block.conv_mask(x), 2).flatten(1)
    values = block.g(x).flatten(2)  # [1, C', 16]
    pooled = (values * mask.softmax(-1)[:, None]).sum(-1)  # [1, C']
    expected = x + block.conv_out(pooled[:, :, None, None].expand(
        -1, -1, 8, 8))
    assert_close_scaled(block(x), expected, _forward_rtol(x.shape))


@pytest.mark.parametrize('pooling', ['att', 'avg'])
@pytest.mark.parametrize('fusions', [f for f in GC_FUSIONS
                                     if 'channel_gate' not in f])
def test_context_block_matches_mmcv(pooling, fusions):
    peer = _randomise(MmcvContextBlock(32, 1 / 4, pooling_type=pooling,
                                       fusion_types=fusions))
    ours = ContextBlock(32, ratio=1 / 4, pooling_type=pooling,
                        fusion_types=fusions)
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(2, 32, 7, 9)
    assert_close_scaled(ours(x), peer(x), _forward_rtol(x.shape))


def test_context_block_gate_is_twice_the_mul():
    block = _randomise(ContextBlock(16, ratio=1 / 4,
                                    fusion_types=('channel_gate', )))
    mul = ContextBlock(16, ratio=1 / 4, fusion_types=('channel_mul', ))
    mul.load_state_dict({k.replace('gate', 'mul'): v
                         for k, v in block.state_dict().items()})
    x = torch.randn(SHAPES[2])
    torch.testing.assert_close(block(x), 2 * mul(x))


@pytest.mark.parametrize('channels,ratio,planes', [(16, 1 / 32, 1),
                                                   (4, 1 / 16, 1),
                                                   (256, 1 / 16, 16),
                                                   (256, 1 / 4, 64)])
def test_context_block_width_never_zero(channels, ratio, planes):
    block = ContextBlock(channels, ratio=ratio)
    assert block.planes == planes
    x = torch.randn(1, channels, 5, 5)
    assert block(x).shape == x.shape


BAD_OPTIONS = [
    (NonLocal2D, dict(mode='softmax'), ValueError, 'mode'),
    (NonLocal2D, dict(mode=None), ValueError, 'mode'),
    (NonLocal2D, dict(reduction=32), ValueError, 'reduction'),
    (NonLocal2D, dict(reduction=0), ValueError, 'reduction'),
    (NonLocal2D, dict(reduction=1.5), TypeError, 'reduction'),
    (NonLocal2D, dict(attn_impl='flash'), ValueError, 'attn_impl'),
    (NonLocal2D, dict(sub_sample='yes'), TypeError, 'sub_sample'),
    (NonLocal2D, dict(norm_cfg='BN'), TypeError, 'norm_cfg'),
    (NonLocal2D, dict(moed='gaussian'), TypeError, 'moed'),
    (DisentangledNonLocal, dict(mode='softmax'), ValueError, 'mode'),
    (DisentangledNonLocal, dict(temperature=0), ValueError, 'temperature'),
    (DisentangledNonLocal, dict(use_pairwise=False, use_unary=False),
     ValueError, 'use_unary'),
    (ContextBlock, dict(pooling_type='max'), ValueError, 'pooling_type'),
    (ContextBlock, dict(fusion_types=('channels_add', )), ValueError,
     'fusion_types'),
    (ContextBlock, dict(fusion_types='channel_add'), TypeError,
     'fusion_types'),
    (ContextBlock, dict(fusion_types=()), ValueError, 'fusion_types'),
    (ContextBlock, dict(ratio=0), ValueError, 'ratio'),
]


@pytest.mark.parametrize('cls,kwargs,error,word', BAD_OPTIONS)
def test_bad_options_raise(cls, kwargs, error, word):
    with pytest.raises(error, match=word):
        cls(16, **kwargs)


@pytest.mark.parametrize('cls', [NonLocal2D, DisentangledNonLocal,
                                 ContextBlock, NonLocal1D, NonLocal3D])
@pytest.mark.parametrize('channels', [0, -4])
def test_non_positive_channels_raise(cls, channels):
    with pytest.raises(ValueError, match='in_channels'):
        cls(channels)


def test_allowed_values_are_listed():
    with pytest.raises(ValueError, match='embedded_gaussian') as info:
        NonLocal2D(16, mode='embedded-gaussian')
    assert 'concatenation' in str(info.value)


@pytest.mark.parametrize('cls,dim', [(NonLocal2D, 2), (NonLocal1D, 1),
                                     (NonLocal3D, 3),
                                     (DisentangledNonLocal, 2),
                                     (ContextBlock, 2)])
def test_wrong_input_raises(cls, dim):
    block = cls(16)
    with pytest.raises(ValueError, match='in_channels=16'):
        block(torch.randn(SHAPES[dim][:1] + (8, ) + SHAPES[dim][2:]))
    wrong_rank = SHAPES[3 if dim != 3 else 2]
    with pytest.raises(ValueError, match='-D input'):
        block(torch.randn(wrong_rank))


def test_concatenation_trains_where_mmcv_cannot():
    peer = NonLocal2d(16, mode='concatenation')
    ours = NonLocal2D(16, mode='concatenation')
    ours.load_state_dict(peer.state_dict())
    # The zero output conv of the init would pass no gradient back at all.
    torch.nn.init.normal_(ours.conv_out.conv.weight, std=0.1)
    reference = NonLocal2D(16, mode='concatenation', attn_impl='reference')
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    for block in (ours, reference):  # the chunked backward, the autograd one
        block.double()(x).square().sum().backward()
    assert ours.concat_project.conv.weight.grad.abs().max() > 0
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)
    # mmcv divides its saved ReLU output in place, so its backward fails.
    x = torch.randn(SHAPES[2], requires_grad=True)
    try:
        peer(x).sum().backward()
    except RuntimeError as err:
        assert 'inplace' in str(err)
    else:
        pytest.skip("ours trains; mmcv's concatenation backward now works "
                    'too (the installed mmcv no longer has the bug)')
