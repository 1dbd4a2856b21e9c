"""FLOPs of the blocks (nonlocal_plugin.analysis.flops) against hand counts.

Convention (mmengine's): one multiply-add is one flop; elementwise adds,
multiplies and activations count 0; softmax, means and pooling count one
per element; a layer norm with affine counts 5 per element.
"""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from nonlocal_plugin import ContextBlock, DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.analysis.flops import count_flops
from nonlocal_plugin.ops.chunked import chunked_softmax_attention
from nonlocal_plugin.ops.concatenation import _ChunkedConcatenation

B, C, H, W = 2, 16, 6, 7
N = H * W
CR = C // 2  # C' of reduction=2


def _x():
    return torch.randn(B, C, H, W)


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_nl_block_hand_count(impl):
    block = NonLocal2D(C, attn_impl=impl).eval()
    projections = B * N * C * 3 * CR  # theta, phi, g: one stacked GEMM
    attention = B * N * N * CR * 2 + B * N * N  # q k^T, p v, softmax
    conv_out = B * N * CR * C
    assert count_flops(block, _x()) == projections + attention + conv_out


def test_nl_block_sdpa_is_zero_without_the_handles():
    """What mmengine 0.10.7 alone reports: the fused attention is missing."""
    block = NonLocal2D(C).eval()
    analyzer = FlopAnalyzer(block, (_x(), ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    # matmul's handle also drops the conv_out batch of 2
    assert analyzer.total() == B * N * C * 3 * CR + N * CR * C


@pytest.mark.parametrize('pooling', ['att', 'avg'])
def test_gc_block_hand_count(pooling):
    block = ContextBlock(C, 1 / 4, pooling_type=pooling).eval()
    planes = 4
    if pooling == 'att':
        pool = B * N * C + B * N + B * N * C  # mask conv, softmax, pool
    else:
        pool = B * N * C  # mean: one per input element
    transform = B * C * planes * 2 + 5 * B * planes  # 2 convs, LayerNorm
    assert count_flops(block, _x()) == pool + transform


@pytest.mark.parametrize('impl', ['fused', 'reference'])
def test_dnl_block_hand_count(impl):
    block = DisentangledNonLocal(C, attn_impl=impl).eval()
    projections = B * N * C * 3 * CR
    whitening = 2 * B * N * CR  # the means of queries and keys
    pairwise = B * N * N * CR * 2 + B * N * N
    unary = B * N * C + B * N + B * N * CR  # conv_mask, softmax, pooling
    conv_out = B * N * CR * C
    assert count_flops(block, _x()) == (projections + whitening + pairwise +
                                        unary + conv_out)


@pytest.mark.parametrize('mode', ['gaussian', 'embedded_gaussian',
                                  'concatenation'])
@pytest.mark.parametrize('sub_sample', [False, True])
def test_fused_counts_as_reference(mode, sub_sample):
    counts = [
        count_flops(
            NonLocal2D(C, sub_sample=sub_sample, mode=mode,
                       attn_impl=impl).eval(), _x())
        for impl in ('fused', 'reference')
    ]
    assert counts[0] == counts[1]


def test_dot_product_fused_counts_its_regrouped_products():
    x = _x()
    fused = count_flops(NonLocal2D(C, mode='dot_product').eval(), x)
    reference = count_flops(
        NonLocal2D(C, mode='dot_product', attn_impl='reference').eval(), x)
    # (q k^T) v against q (k^T v): the fused path really is cheaper
    assert reference - fused == B * N * N * CR * 2 - 2 * B * N * CR * CR


class _Kernels(nn.Module):
    """Calls the custom autograd functions directly, as eager code does."""

    def forward(self, q, k, v, a, b):
        return (chunked_softmax_attention(q, k, v, 0.5),
                _ChunkedConcatenation.apply(a, b, v))


def test_custom_autograd_functions_are_counted():
    q, k, v = torch.randn(B, N, 8), torch.randn(B, 10, 8), torch.randn(
        B, 10, 4)
    a, b = torch.randn(B, N), torch.randn(B, 10)
    softmax = B * N * 10 * (8 + 4) + B * N * 10
    concatenation = B * N * 10 * 4
    assert count_flops(_Kernels(), q, k, v, a, b) == softmax + concatenation


def test_get_flops_runs_a_config(capsys):
    from nonlocal_plugin.analysis.cli import flops_main
    flops_main(['configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py', '--shape',
                '96', '256'])
    out = capsys.readouterr().out
    assert 'one multiply-add = 1 flop' in out
    # res4 of ResNet-18 at 1/4 width: 64 channels at stride 16, 6 x 16
    positions, channels, inner = 6 * 16, 64, 32
    hand = (4 * positions * channels * inner + 2 * positions**2 * inner +
            positions**2)
    line, = [row for row in out.splitlines() if 'nonlocal_block' in row]
    assert line.split()[-1] == str(hand)
    assert 'params' in out and 'backbone' in out


def test_get_flops_refuses_a_bad_shape():
    from nonlocal_plugin.analysis.cli import flops_main
    with pytest.raises(SystemExit, match='--shape'):
        flops_main(['configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py',
                    '--shape', '0', '256'])
