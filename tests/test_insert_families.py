"""nonlocal_plugin.InsertBlocks on each backbone family the pinned stack has:
mmdet's ResNet, ResNeXt, RegNet, Res2Net and HRNet, and mmseg's ResNetV1c.

For each: the plain backbone's state dict loads with ``strict=True``, the
output equals the plain backbone's after ``init_weights``, forward hooks
see the block between its module and the next one, and gradients reach
the block.
"""
import pytest
import torch
from conftest import activate, exactly_zero_grads
from mmengine.registry import MODELS as ROOT_MODELS

from nonlocal_plugin.backbones import insert_blocks

pytestmark = pytest.mark.usefixtures('one_thread')

# helpers

NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)
SMALL = dict(base_channels=8, stem_channels=8)
HRNET_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                num_blocks=(1, ), num_channels=(8, )),
    stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                num_blocks=(2, 2), num_channels=(8, 16)),
    stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                num_blocks=(2, 2, 2), num_channels=(8, 16, 32)),
    stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                num_blocks=(2, 2, 2, 2), num_channels=(8, 16, 32, 64)))

# family: (backbone cfg, entry, the module the block follows, the module
# that takes the block's output, the block's key)
FAMILIES = {
    'mmdet-ResNet': (
        dict(type='mmdet.ResNet', depth=50, **SMALL),
        dict(cfg=NL, before='layer3.-1'), 'layer3.4', 'layer3.5',
        'between_layer3.after4_nonlocal_block'),
    'mmdet-ResNeXt': (
        dict(type='mmdet.ResNeXt', depth=50, groups=4, base_width=16,
             **SMALL),
        dict(cfg=NL, after=['layer2.1::2', 'layer3.1::2']), 'layer3.3',
        'layer3.4', 'between_layer3.after3_nonlocal_block'),
    'mmdet-RegNet': (
        dict(type='mmdet.RegNet', stem_channels=16,
             arch=dict(w0=16, wa=12.0, wm=2.0, group_w=8, depth=8,
                       bot_mul=1.0)),
        dict(cfg=NL, before='layer3.-1'), 'layer3.2', 'layer3.3',
        'between_layer3.after2_nonlocal_block'),
    'mmdet-Res2Net': (
        dict(type='mmdet.Res2Net', depth=50, **SMALL),
        dict(cfg=GC, after='layer2.-1'), 'layer2.3', 'layer3.0',
        'between_layer2.after3_context_block'),
    'mmdet-HRNet': (
        dict(type='mmdet.HRNet', extra=HRNET_EXTRA),
        dict(cfg=NL, after='stage3.*.branches.1.-1'),
        'stage3.0.branches.1.1', 'stage3.0.fuse_layers.0.1',
        'between_stage3_0_branches_1.after1_nonlocal_block'),
    'mmseg-ResNetV1c': (
        dict(type='mmseg.ResNetV1c', depth=18, **SMALL),
        dict(cfg=NL, before='layer3.-1'), 'layer3.0', 'layer3.1',
        'between_layer3.after0_nonlocal_block'),
}
IDS = sorted(FAMILIES)


def pair(family, **options):
    """(ours, plain): the family's backbone with and without the block."""
    cfg, entry, _, _, _ = FAMILIES[family]
    cfg = dict(cfg, **options)
    torch.manual_seed(0)
    ours = insert_blocks(cfg, blocks=[entry])
    return ours, ROOT_MODELS.build(cfg)


def block_of(model, key):
    container, name = key.split('.')
    return getattr(model, container)[name]


def image(batch=1, seed=0):
    return torch.randn(batch, 3, 64, 64,
                       generator=torch.Generator().manual_seed(seed))


# tests


@pytest.mark.parametrize('family', IDS)
def test_plain_state_dict_loads_strictly(family):
    ours, plain = pair(family)
    key = FAMILIES[family][4]
    plain_keys, our_keys = set(plain.state_dict()), set(ours.state_dict())
    assert plain_keys <= our_keys
    assert any(k.startswith(key + '.') for k in our_keys - plain_keys)
    assert all(k.startswith('between_') for k in our_keys - plain_keys)
    result = ours.load_state_dict(plain.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('family', IDS)
def test_output_equals_the_plain_backbone_after_init_weights(family):
    ours, plain = pair(family)
    ours.init_weights()  # the backbone's init, then the block's own
    plain.load_state_dict(
        {k: v for k, v in ours.state_dict().items()
         if not k.startswith('between')}, strict=True)
    ours.eval()
    plain.eval()
    with torch.no_grad():
        got, want = ours(image()), plain(image())
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('family', IDS)
def test_block_sits_between_its_module_and_the_next(family):
    ours, _ = pair(family)
    _, _, after, consumer, key = FAMILIES[family]
    ours.eval()
    block = activate(block_of(ours, key))
    calls = []
    ours.get_submodule(after).register_forward_hook(
        lambda _, args, out: calls.append(('after', out.clone())))
    block.register_forward_hook(
        lambda _, args, out: calls.append(('block', args[0].clone(),
                                           out.clone())))
    ours.get_submodule(consumer).register_forward_pre_hook(
        lambda _, args: calls.append(('next', args[0].clone())))
    with torch.no_grad():
        ours(image())
    assert [c[0] for c in calls] == ['after', 'block', 'next']
    (_, module_out), (_, block_in, block_out), (_, next_in) = calls
    assert torch.equal(block_in, module_out)
    assert not torch.allclose(block_out, block_in)  # not the identity
    assert torch.equal(next_in, block_out)


@pytest.mark.parametrize('family', IDS)
def test_gradient_reaches_the_block(family):
    ours, _ = pair(family)
    key = FAMILIES[family][4]
    activate(block_of(ours, key))
    ours.train()
    sum(out.sum() for out in ours(image(batch=2))).backward()
    params = dict(block_of(ours, key).named_parameters())
    assert params
    missing = [n for n, p in params.items() if p.grad is None]
    zero = [n for n, p in params.items()
            if p.grad is not None and not p.grad.any()]
    assert not missing
    assert set(zero) <= exactly_zero_grads(block_of(ours, key))
