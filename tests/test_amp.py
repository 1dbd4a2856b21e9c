"""Mixed precision: every block and mode under CPU autocast (bf16, fp16)."""
import pytest
import torch
from conftest import cpu_autocast_supported, rel_err, tolerance
from mmcv.cnn import NonLocal2d as MmcvNonLocal2d

from nonlocal_plugin import ContextBlock, DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.blocks.non_local import MODES


def _needs_cpu_autocast(dtype):
    """Skips where this torch has no CPU autocast to ``dtype`` (torch 2.1
    has none to fp16), found by trying it rather than from the version."""
    name = str(dtype).replace('torch.', '')
    return pytest.mark.skipif(
        not cpu_autocast_supported(dtype),
        reason=f'torch {torch.__version__} has no CPU autocast to {name}: '
        f"torch.autocast('cpu', dtype=torch.{name}) is refused or disables "
        'itself')


DTYPES = [pytest.param(torch.bfloat16, id='bf16',
                       marks=_needs_cpu_autocast(torch.bfloat16)),
          pytest.param(torch.float16, id='fp16',
                       marks=_needs_cpu_autocast(torch.float16))]


def _blocks():
    for mode in MODES:
        for sub_sample in (False, True):
            tag = f'{mode}-ss{int(sub_sample)}'
            yield pytest.param(NonLocal2D, dict(mode=mode,
                                                sub_sample=sub_sample),
                               id=f'NL-{tag}')
            yield pytest.param(DisentangledNonLocal,
                               dict(mode=mode, sub_sample=sub_sample),
                               id=f'DNL-{tag}')
    for pooling in ('att', 'avg'):
        yield pytest.param(
            ContextBlock,
            dict(pooling_type=pooling,
                 fusion_types=('channel_gate', 'channel_add')),
            id=f'GC-{pooling}')


def _live(cls, kwargs, channels=64):
    """A block whose output conv is not zero, so the branch counts."""
    if cls is ContextBlock:
        block = cls(channels, ratio=1 / 4, **kwargs)
        for fusion in block.fusion_types:
            torch.nn.init.normal_(getattr(block, f'{fusion}_conv')[-1].weight,
                                  std=0.1)
        return block
    return cls(channels, zeros_init=False, std=0.05, **kwargs)


def _run(block, x, dtype):
    with torch.autocast('cpu', dtype=dtype):
        out = block(x)
    return out


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('cls,kwargs', _blocks())
def test_finite_on_large_inputs(cls, kwargs, dtype):
    """Logits far beyond fp16's range (65504) still give finite results."""
    torch.manual_seed(0)
    block = _live(cls, kwargs)
    x = (40 * torch.randn(1, 64, 16, 16)).requires_grad_()
    out = _run(block, x, dtype)
    assert torch.isfinite(out).all()
    # A mean keeps the conv weight gradients, summed over positions in
    # fp16, inside fp16's range, as AMP's loss scaler would; what is tested
    # is that the attention's own backward does not overflow.
    out.float().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('cls,kwargs', _blocks())
def test_close_to_fp32_at_moderate_scale(cls, kwargs, dtype):
    """The autocast branch against fp32 (:func:`conftest.tolerance`).

    Only the autocast side rounds, to ``dtype``: the input, the first convs'
    weights and outputs, the attention's output and the output conv's
    weight and output, six roundings of at most ``eps / 2`` each, so
    ``roundings=3``. The sums run in fp32: the attention's over the 256
    positions within a conv's over the 64 channels.
    """
    torch.manual_seed(0)
    block = _live(cls, kwargs)
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        expected = block(x) - x
        got = _run(block, x, dtype).float() - x
    assert rel_err(got, expected) <= tolerance(dtype, 16 * 16 * 64,
                                               roundings=3)


@_needs_cpu_autocast(torch.float16)
def test_mmcv_overflows_where_we_do_not():
    # The peer's embedded-gaussian logits overflow in fp16 once inputs are
    # large; ours keep them in fp32.
    torch.manual_seed(0)
    peer = MmcvNonLocal2d(64, mode='embedded_gaussian', zeros_init=False)
    ours = NonLocal2D(64, mode='embedded_gaussian')
    ours.load_state_dict(peer.state_dict())
    for conv in (peer.theta.conv, peer.phi.conv):
        torch.nn.init.normal_(conv.weight, std=0.5)
    ours.load_state_dict(peer.state_dict())
    x = 40 * torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        assert not torch.isfinite(_run(peer, x, torch.float16)).all()
        assert torch.isfinite(_run(ours, x, torch.float16)).all()
