"""The blocks inside OpenMMLab: registry scopes, backbone plugins, resume."""
import itertools

import pytest
import torch
from mmcv.cnn import ContextBlock as MmcvContextBlock
from mmcv.cnn import NonLocal2d as MmcvNonLocal2d
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmseg.models.backbones import resnet as mmseg_resnet
from mmseg.registry import MODELS as SEG_MODELS

import nonlocal_plugin
from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    NonLocal2D,
    compat,
)
from nonlocal_plugin.compat import chains_plugins

LIBS = {'mmdet': (DET_MODELS, 'ResNet'), 'mmseg': (SEG_MODELS, 'ResNetV1c')}
OURS = {
    'nonlocal_plugin.NonLocal2D': (NonLocal2D, 'nonlocal_block'),
    'nonlocal_plugin.ContextBlock': (ContextBlock, 'context_block'),
    'nonlocal_plugin.DisentangledNonLocal': (DisentangledNonLocal,
                                             'dnl_block'),
}
POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def build(scope, cfg):
    with DefaultScope.overwrite_default_scope(scope):
        return LIBS[scope][0].build(cfg)


def resnet(scope, plugins, depth=50, **kwargs):
    """A ResNet in eval mode (its ``train()`` returns None, so no chaining)."""
    cfg = dict(type=LIBS[scope][1], depth=depth, plugins=plugins, **kwargs)
    net = build(scope, cfg)
    net.eval()
    return net


@pytest.mark.parametrize('scope', LIBS)
@pytest.mark.parametrize('type_', OURS)
def test_builds_through_registry(scope, type_):
    block = build(scope, dict(type=type_, in_channels=16))
    assert type(block) is OURS[type_][0]


@pytest.mark.parametrize('scope', LIBS)
def test_no_clash_with_mmcv(scope):
    # mmcv's names still give mmcv's classes, ours need the scope prefix.
    assert type(build(scope, dict(type='NonLocal2d',
                                  in_channels=16))) is MmcvNonLocal2d
    assert type(build(scope, dict(type='ContextBlock', in_channels=16,
                                  ratio=1 / 4))) is MmcvContextBlock
    assert type(build(scope, dict(type='nonlocal_plugin.ContextBlock',
                                  in_channels=16))) is ContextBlock
    assert ROOT_MODELS.get('ContextBlock') is MmcvContextBlock
    assert ROOT_MODELS.get('NonLocal2D') is None
    assert nonlocal_plugin.MODELS.scope == 'nonlocal_plugin'


def test_config_file_with_custom_imports(tmp_path):
    from mmengine.config import Config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "default_scope = 'mmseg'\n"
        "custom_imports = dict(imports=['nonlocal_plugin'],\n"
        "                      allow_failed_imports=False)\n"
        "model = dict(type='ResNetV1c', depth=50, plugins=[dict(\n"
        "    cfg=dict(type='nonlocal_plugin.DisentangledNonLocal'),\n"
        "    stages=(False, False, True, False), position='after_conv3')])\n")
    cfg = Config.fromfile(str(cfg_file))
    backbone = build(cfg.default_scope, cfg.model)
    blocks = [m for m in backbone.modules()
              if isinstance(m, DisentangledNonLocal)]
    assert len(blocks) == 6  # one per res4 bottleneck of ResNet-50


def _plugin(type_, **kwargs):
    return dict(type=type_, **kwargs)


@pytest.mark.parametrize('scope', LIBS)
@pytest.mark.parametrize('type_', OURS)
@pytest.mark.parametrize('position', POSITIONS)
def test_plugin_at_every_position(scope, type_, position):
    stages = (False, True, False, True)
    net = resnet(scope, [dict(cfg=_plugin(type_), stages=stages,
                              position=position)])
    net.init_weights()
    abbr = OURS[type_][1]
    calls = []
    for name, module in net.named_modules():
        if isinstance(module, OURS[type_][0]):
            assert name.split('.')[-1] == abbr
            module.register_forward_hook(
                lambda m, i, o, name=name: calls.append(
                    (name, torch.equal(i[0], o))))
    net(torch.randn(1, 3, 64, 64))
    names = [name for name, _ in calls]
    # ResNet-50: 4 blocks in res3, 3 in res5; each plugin ran once.
    assert sorted(names) == sorted(
        [f'layer2.{i}.{abbr}' for i in range(4)] +
        [f'layer4.{i}.{abbr}' for i in range(3)])
    # Identity at init, even after the backbone's own init_weights().
    assert all(identity for _, identity in calls)


@pytest.mark.parametrize('scope', LIBS)
@pytest.mark.parametrize('stages', [
    s for s in itertools.product((False, True), repeat=4) if any(s)
])
def test_plugin_for_any_stage_selection(scope, stages):
    net = resnet(scope, [dict(cfg=_plugin('nonlocal_plugin.ContextBlock'),
                              stages=stages, position='after_conv3')])
    per_stage = {1: 3, 2: 4, 3: 6, 4: 3}
    expected = sum(per_stage[i + 1] for i, on in enumerate(stages) if on)
    found = [m for m in net.modules() if isinstance(m, ContextBlock)]
    assert len(found) == expected
    assert net(torch.randn(1, 3, 64, 64))[0].shape[1] == 256


@pytest.mark.parametrize('scope', LIBS)
def test_two_plugins_at_one_position_both_apply_in_order(scope):
    stages = (False, False, True, False)
    net = resnet(scope, [
        dict(cfg=_plugin('nonlocal_plugin.NonLocal2D'), stages=stages,
             position='after_conv2'),
        dict(cfg=_plugin('nonlocal_plugin.ContextBlock',
                         fusion_types=('channel_gate', 'channel_add')),
             stages=stages, position='after_conv2'),
    ], out_indices=(2, ))
    block = net.layer3[1]
    first, second = block.nonlocal_block, block.context_block
    for module in (first.conv_out.conv, second.channel_add_conv[-1],
                   second.channel_gate_conv[-1]):
        torch.nn.init.normal_(module.weight, std=0.1)
    seen = {}
    first.register_forward_hook(lambda m, i, o: seen.update(first=o))
    second.register_forward_hook(lambda m, i, o: seen.update(second_in=i[0]))
    plugged = net(torch.randn(1, 3, 64, 64))[0]
    # The second plugin ran on the first one's output, not on conv2's.
    assert torch.equal(seen['second_in'], seen['first'])
    # Dropping the first plugin changes the result: it was not overwritten.
    first.conv_out.conv.weight.data.zero_()
    first.conv_out.conv.bias.data.zero_()
    assert not torch.allclose(net(torch.randn(1, 3, 64, 64))[0], plugged)


def test_mmseg_forward_plugin_is_patched():
    if 'mmseg_plugin_chaining' not in compat.applied_fixes():
        pytest.skip('the installed mmseg chains its plugins itself (or '
                    f'{compat.ENV_VAR} switched the fix off): nothing to '
                    'patch')
    assert chains_plugins(mmseg_resnet.Bottleneck.forward_plugin)


@pytest.mark.parametrize('scope', LIBS)
@pytest.mark.parametrize('ours,peer', [
    ('nonlocal_plugin.NonLocal2D', 'NonLocal2d'),
    ('nonlocal_plugin.ContextBlock', 'ContextBlock'),
])
def test_checkpoint_keys_line_up_with_mmcv_blocks(scope, ours, peer):
    stages = (False, True, True, False)
    cfg = dict(ratio=1 / 16) if 'Context' in peer else {}
    peer_net = resnet(scope, [dict(cfg=_plugin(peer, **cfg), stages=stages,
                                   position='after_conv3')])
    our_net = resnet(scope, [dict(cfg=_plugin(ours, **cfg), stages=stages,
                                  position='after_conv3')])
    with torch.no_grad():
        for name, p in peer_net.named_parameters():
            if 'block' in name:
                p.normal_(0, 0.05)
    state = peer_net.state_dict()
    assert list(our_net.state_dict()) == list(state)
    our_net.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(our_net(x), peer_net(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_mmcv_context_block_is_not_identity_after_backbone_init():
    # Why our blocks have init_weights(): the backbone's Kaiming init reaches
    # mmcv's ContextBlock, whose last conv then no longer starts at zero.
    stages = (False, False, True, False)
    peer = resnet('mmdet', [dict(cfg=_plugin('ContextBlock', ratio=1 / 16),
                                 stages=stages, position='after_conv3')])
    peer.init_weights()
    if peer.layer3[0].context_block.channel_add_conv[-1].weight.abs().sum(
    ) == 0:
        pytest.skip("mmcv's ContextBlock now keeps its zero init through the "
                    "backbone's init_weights()")
    assert peer.layer3[0].context_block.channel_add_conv[-1].weight.abs(
    ).sum() > 0
