"""nonlocal_plugin.InsertBlocks on mmdet's ResNet: loading, init, hooks,
with_cp, frozen stages, SyncBN, copies, the ResNetNL spelling, registries.

Paths, keys and errors are in test_insert_paths.py; the families (ResNeXt,
RegNet, Res2Net, HRNet, mmseg) in test_insert_families.py; tracing, ONNX,
DDP and the toy config in test_insert_export.py.
"""
import copy
import importlib.util
import pickle

import pytest
import torch
from conftest import activate, exactly_zero_grads
from mmdet.registry import MODELS as DET_MODELS
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as SEG_MODELS
from torch import nn

from nonlocal_plugin import NonLocal2D
from nonlocal_plugin.backbones import MissingLibraryError, insert_blocks

pytestmark = pytest.mark.usefixtures('one_thread')

# helpers

SMALL = dict(type='mmdet.ResNet', depth=50, base_channels=8, stem_channels=8)
NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)


def build(blocks, **options):
    return insert_blocks(dict(SMALL, **options), blocks=blocks)


def plain(**options):
    return DET_MODELS.build(dict(SMALL, **options))


def image(size=64, seed=0, batch=1):
    return torch.randn(batch, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


def blocks_of(model):
    return [f'{name}.{key}' for name, container in model.named_children()
            if name.startswith('between') for key in container]


def record(module, calls, name):
    """A forward hook that appends (name, input, output) to ``calls``."""
    return module.register_forward_hook(
        lambda _, args, out: calls.append((name, args[0].clone(),
                                           out.clone())))


# loading and init


def test_plain_checkpoint_loads_strictly_and_partial_one_does_not():
    model = build([dict(cfg=NL, after=['layer2.-1', 'layer3.-2'])])
    activate(model.between_layer3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = plain()
    result = model.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in model.state_dict().items():
        want = before[key] if key.startswith('between') else \
            reference.state_dict()[key]
        torch.testing.assert_close(value, want, rtol=0, atol=0)
    # One block's keys missing is a real mismatch.
    partial = {k: v for k, v in before.items()
               if not k.startswith('between_layer2.')}
    with pytest.raises(RuntimeError, match='Missing key.*between_layer2'):
        model.load_state_dict(partial, strict=True)


@pytest.mark.parametrize('cfg', [
    NL, GC,
    dict(type='nonlocal_plugin.DisentangledNonLocal'),
    dict(type='NonLocal2d'),
    dict(type='ContextBlock', ratio=1 / 4),
], ids=['NonLocal2D', 'ContextBlock', 'DNL', 'mmcv-NonLocal2d',
        'mmcv-ContextBlock'])
def test_identity_after_init_weights(cfg):
    torch.manual_seed(0)
    options = dict(zero_init_residual=False)  # non-trivial residual branches
    ours = build([dict(cfg=cfg, after=['layer3.0', 'layer2.-1.bn3'])],
                 **options)
    ours.init_weights()  # Kaiming on every conv, then the blocks' own init
    reference = plain(**options)
    reference.load_state_dict(ours.state_dict(), strict=False)
    ours.eval()
    reference.eval()
    for got, want in zip(ours(image()), reference(image())):
        torch.testing.assert_close(got, want)


# forward


def test_blocks_run_at_their_place_and_hooks_on_it_see_its_own_output():
    model = build([dict(cfg=NL, after='layer3.-2'),
                   dict(cfg=GC, after='layer3.-2')])
    model.eval()
    first = activate(model.between_layer3['after4_nonlocal_block'], 1)
    second = activate(model.between_layer3['after4_context_block'], 2)
    calls = []
    record(model.layer3[4], calls, 'residual')  # registered after ours
    record(first, calls, 'nl')
    record(second, calls, 'gc')
    model.layer3[5].register_forward_pre_hook(
        lambda _, args: calls.append(('next', args[0].clone(), None)))
    model(image())
    assert [c[0] for c in calls] == ['residual', 'nl', 'gc', 'next']
    residual, nl, gc, nxt = (c[1:] for c in calls)
    assert torch.equal(nl[0], residual[1])
    assert torch.equal(gc[0], nl[1]) and not torch.equal(nl[1], nl[0])
    assert torch.equal(nxt[0], gc[1])


def test_block_inside_a_bottleneck_is_mmdets_after_conv3_plugin():
    """after='layer2.*.bn3' is the place of mmdet's after_conv3 plugins."""
    theirs = DET_MODELS.build(dict(SMALL, plugins=[
        dict(cfg=GC, stages=(False, True, False, False),
             position='after_conv3')
    ]))
    ours = build([dict(cfg=GC, after='layer2.*.bn3')])
    activate(theirs, seed=3)
    weights = {}
    for key, value in theirs.state_dict().items():
        parts = key.split('.')
        if parts[2:3] == ['context_block']:  # layer2.i.context_block.*
            key = (f'between_layer2_{parts[1]}.after_bn3_context_block.' +
                   '.'.join(parts[3:]))
        weights[key] = value
    ours.load_state_dict(weights, strict=True)
    theirs.eval()
    ours.eval()
    for got, want in zip(ours(image()), theirs(image())):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('with_cp', [None, True])
def test_gradient_reaches_every_block_and_with_cp_keeps_it(with_cp):
    """with_cp=None follows the backbone's: the blocks recompute their
    forward in the backward pass, and nothing else changes."""
    results = []
    for backbone_cp in (False, True):
        torch.manual_seed(0)
        model = insert_blocks(
            dict(SMALL, with_cp=backbone_cp), with_cp=with_cp,
            blocks=[dict(cfg=NL, before='layer3.-1'),
                    dict(cfg=GC, after='layer2.0.bn3')])
        for name, container in model.named_children():
            if name.startswith('between'):
                activate(container, seed=len(name))
        calls = []  # a pre-hook: a recomputation may stop before the end
        block = model.between_layer3['after4_nonlocal_block']
        block.register_forward_pre_hook(lambda *_, c=calls: c.append(1))
        model.train()
        x = image(batch=2).requires_grad_()
        sum(out.sum() for out in model(x)).backward()
        params = [p for n, p in model.named_parameters()
                  if n.startswith('between')]
        assert all(p.grad is not None for p in params)
        for name, container in model.named_children():
            for block in (container.values()
                          if name.startswith('between') else ()):
                zero = exactly_zero_grads(block)  # exact zeros or noise
                assert all(p.grad.any() for n, p in block.named_parameters()
                           if n not in zero)
        checkpointed = backbone_cp if with_cp is None else with_cp
        assert len(calls) == (2 if checkpointed else 1)
        results.append([x.grad] + [p.grad for p in params])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_frozen_stages_freeze_their_blocks():
    cfg = dict(NL, norm_cfg=dict(type='BN'))
    model = build([dict(cfg=cfg, after=['layer1.-1', 'layer2.-1']),
                   dict(cfg=cfg, before='layer3.0')], frozen_stages=2,
                  norm_eval=False)
    model.train()
    frozen = [model.between_layer1, model.between_layer2]
    assert all(not p.requires_grad for c in frozen for p in c.parameters())
    assert not any(m.training for c in frozen for m in c.modules())
    trained = model.between_layer3['before0_nonlocal_block']
    assert all(p.requires_grad for p in trained.parameters())
    assert trained.training and trained.conv_out.norm.training
    model.train()  # frozen blocks stay in eval mode
    assert not frozen[0]['after2_nonlocal_block'].conv_out.norm.training


def test_blocks_freeze_with_stages_frozen_in_train_only():
    # mmdet's Swin freezes its patch embedding in train(), not __init__.
    model = insert_blocks(
        dict(type='mmdet.SwinTransformer', embed_dims=16, depths=(1, 1),
             num_heads=(1, 2), strides=(4, 2), out_indices=(0, 1),
             frozen_stages=0),
        blocks=[dict(cfg=GC, after='patch_embed.projection')])
    block = model.between_patch_embed['after_projection_context_block']
    assert block.in_channels == 16
    assert not any(p.requires_grad for p in block.parameters())
    model.train()
    assert not block.training
    model(image())


def test_sync_bn_reverted_to_bn_keeps_the_block_after_a_norm():
    syncbn = dict(type='SyncBN', requires_grad=True)
    model = build([dict(cfg=dict(GC), after='layer2.0.bn3'),
                   dict(cfg=dict(NL, norm_cfg=syncbn), before='layer3.-1')],
                  norm_cfg=syncbn)
    model = revert_sync_batchnorm(model)  # what mmengine does on 1 process
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    model.eval()
    block = activate(model.between_layer2_0['after_bn3_context_block'])
    calls = []
    record(block, calls, 'gc')
    record(model.layer2[0].bn3, calls, 'bn3')  # the new BN module
    model(image())
    assert [c[0] for c in calls] == ['bn3', 'gc']
    assert torch.equal(calls[1][1], calls[0][2])


def test_copies_and_pickles_carry_their_own_blocks():
    model = build([dict(cfg=NL, before='layer3.-1')])
    model.eval()
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        activate(twin.between_layer3)  # the original stays the identity
        calls = []
        record(twin.between_layer3['after4_nonlocal_block'], calls, 'nl')
        changed = twin(image())
        assert len(calls) == 1
        assert not torch.allclose(changed[2], model(image())[2])


def test_resnetnl_between_blocks_is_the_same_model_and_keys():
    """Migration: checkpoints move between the two spellings as they are."""
    from nonlocal_plugin.backbones import ResNetNL
    torch.manual_seed(0)
    theirs = ResNetNL(depth=50, base_channels=8, stem_channels=8,
                      between_blocks=[dict(cfg=NL, after=(-2, ),
                                           stages=(False, False, True,
                                                   False))])
    activate(theirs.between_layer3)
    ours = build([dict(cfg=NL, before='layer3.-1')])
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval()
    ours.eval()
    for got, want in zip(ours(image()), theirs(image())):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# registries and scopes


@pytest.mark.parametrize('registry, scope, kind', [
    (DET_MODELS, 'mmdet', 'ResNet'),
    (DET_MODELS, 'mmdet', 'mmdet.ResNet'),
    (SEG_MODELS, 'mmseg', 'ResNetV1c'),
    (SEG_MODELS, 'mmseg', 'mmseg.ResNetV1c'),
    (DET_MODELS, 'mmdet', 'mmseg.ResNetV1c'),
])
def test_builds_from_a_config_in_any_scope(registry, scope, kind):
    cfg = dict(type='nonlocal_plugin.InsertBlocks',
               backbone=dict(type=kind, depth=18, base_channels=8,
                             stem_channels=8),
               blocks=[dict(cfg=NL, before='layer3.-1')])
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert type(model).__name__ == kind.split('.')[-1]
    assert isinstance(model.between_layer3['after0_nonlocal_block'],
                      NonLocal2D)


def test_init_cfg_given_replaces_the_backbones():
    """``--cfg-options model.backbone.init_cfg=None`` trains from scratch."""
    pretrained = dict(type='Pretrained', checkpoint='missing.pth')
    cfg = dict(SMALL, init_cfg=pretrained)
    assert insert_blocks(cfg, blocks=[]).init_cfg == pretrained
    model = insert_blocks(cfg, blocks=[dict(cfg=NL, after='layer3.4')],
                          init_cfg=None)
    assert 'Pretrained' not in str(model.init_cfg)  # ResNet's default init
    model.init_weights()  # no checkpoint to load


def test_missing_library_and_missing_scope_are_one_message(monkeypatch):
    # No default scope: an earlier test's Runner may have left one behind.
    monkeypatch.setattr(DefaultScope, 'get_current_instance',
                        classmethod(lambda cls: None))
    with pytest.raises(ValueError, match="'ResNet' has no scope"):
        insert_blocks(dict(type='ResNet', depth=18), blocks=[])
    if importlib.util.find_spec('mmpretrain') is None:
        with pytest.raises(MissingLibraryError, match='pip install mmpretra'):
            insert_blocks(dict(type='mmpretrain.ConvNeXt'), blocks=[])
