"""Drop-in for code as well as configs: mmcv's positional order, numpy
scalars, empty batches."""
import numpy as np
import pytest
import torch
from mmcv.cnn import ContextBlock as MmcvContextBlock
from mmcv.cnn import NonLocal2d as MmcvNonLocal2d

from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    NonLocal1D,
    NonLocal2D,
    NonLocal3D,
)


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)


@pytest.mark.parametrize('args', [(16, 1 / 4), (16, 0.25, 'avg'),
                                  (16, 0.25, 'att', ('channel_mul', ))])
def test_context_block_takes_mmcv_positional_order(args):
    ours, peer = ContextBlock(*args), MmcvContextBlock(*args)
    _randomise(peer)
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('sub_sample', [False, True])
def test_non_local_takes_mmcv_positional_order(sub_sample):
    ours, peer = NonLocal2D(16, sub_sample), MmcvNonLocal2d(16, sub_sample)
    assert ours.sub_sample is sub_sample
    _randomise(peer)
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = torch.randn(2, 16, 6, 8)
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-5, atol=1e-6)


def test_options_beyond_mmcv_stay_keyword_only():
    with pytest.raises(TypeError):
        NonLocal2D(16, False, None, 2)  # reduction is keyword-only
    with pytest.raises(TypeError):
        ContextBlock(16, 0.25, 'att', ('channel_add', ), 'extra')


def test_numpy_scalars_are_accepted():
    block = NonLocal2D(np.int64(16), np.bool_(True), reduction=np.int32(2),
                       use_scale=np.bool_(False), std=np.float32(0.02))
    assert (block.in_channels, block.inter_channels) == (16, 8)
    assert type(block.sub_sample) is bool and block.sub_sample
    gc = ContextBlock(np.int64(16), np.float64(0.25))
    assert gc.planes == 4
    dnl = DisentangledNonLocal(np.int16(16), temperature=np.float32(0.1),
                               use_unary=np.bool_(True))
    assert dnl.temperature == pytest.approx(0.1)
    x = torch.randn(1, 16, 4, 4)
    for module in (block, gc, dnl):
        assert module(x).shape == x.shape


@pytest.mark.parametrize('bad', [np.float64(16.0), True, np.bool_(True)])
def test_numpy_non_integers_are_still_refused(bad):
    with pytest.raises(TypeError, match='in_channels must be a positive int'):
        NonLocal2D(bad)


BLOCKS = {
    'nl1d': (lambda: NonLocal1D(8), (0, 8, 10)),
    'nl2d': (lambda: NonLocal2D(8), (0, 8, 5, 6)),
    'nl2d-sub': (lambda: NonLocal2D(8, True), (0, 8, 6, 6)),
    'nl3d': (lambda: NonLocal3D(8), (0, 8, 2, 4, 4)),
    'gaussian': (lambda: NonLocal2D(8, mode='gaussian'), (0, 8, 5, 6)),
    'dot': (lambda: NonLocal2D(8, mode='dot_product'), (0, 8, 5, 6)),
    'concat': (lambda: NonLocal2D(8, mode='concatenation'), (0, 8, 5, 6)),
    'gc': (lambda: ContextBlock(8, 0.5), (0, 8, 5, 6)),
    'gc-avg-mul': (lambda: ContextBlock(8, 0.5, 'avg', ('channel_mul', )),
                   (0, 8, 5, 6)),
    'dnl': (lambda: DisentangledNonLocal(8), (0, 8, 5, 6)),
    'dnl-sub': (lambda: DisentangledNonLocal(8, sub_sample=True),
                (0, 8, 6, 6)),
}


@pytest.mark.parametrize('name', BLOCKS)
def test_empty_batch_gives_empty_output(name):
    make, shape = BLOCKS[name]
    block = make()
    x = torch.randn(*shape, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape
