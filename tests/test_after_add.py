"""``plugins`` at ``position='after_add'``: after the residual add, before
the residual block's final ReLU, in ResNetNL and ResNetV1cNL."""
import pytest
import torch
from conftest import activate, exactly_zero_grads
from mmcv.cnn.bricks import ContextBlock as MmcvContextBlock
from mmdet.models.backbones import ResNet as DetResNet
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import DefaultScope
from mmseg.models.backbones import ResNetV1c as SegResNetV1c
from mmseg.registry import MODELS as SEG_MODELS

from nonlocal_plugin import NonLocal2D
from nonlocal_plugin.backbones import ResNetNL, ResNetV1cNL

pytestmark = pytest.mark.usefixtures('one_thread')

# helpers

KINDS = ('mmdet', 'mmseg')
DEPTHS = (50, 18)  # Bottleneck and BasicBlock
OURS = {'mmdet': ResNetNL, 'mmseg': ResNetV1cNL}
PARENTS = {'mmdet': DetResNet, 'mmseg': SegResNetV1c}
SMALL = dict(base_channels=16, stem_channels=16)  # fast on 2 shared cores
RES4 = (False, False, True, False)  # layer3
LAYER3_BLOCKS = {50: 6, 18: 2}
NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)
DNL = dict(type='nonlocal_plugin.DisentangledNonLocalDet2D')


def build(kind, depth=50, **options):
    return OURS[kind](depth=depth, **SMALL, **options)


def parent(kind, depth=50, **options):
    return PARENTS[kind](depth=depth, **SMALL, **options)


def after_add(cfg=NL, stages=RES4, **options):
    return dict(cfg=cfg, stages=stages, position='after_add', **options)


def gc_after_conv3(depth):
    """mmdet's plugins where the library takes them (Bottleneck only)."""
    if depth == 18:
        return None
    return [dict(cfg=GC, position='after_conv3')]


def image(size=64, seed=0):
    return torch.randn(1, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


def block_keys(model):
    """State-dict keys of the after_add blocks."""
    return {
        f'{res}.{i}.{name}.{key}'
        for res in model.res_layers
        for i, block in enumerate(getattr(model, res))
        for name in getattr(block, 'after_add_names', ())
        for key in getattr(block, name).state_dict()
    }


def conv_path_plus_identity(res_block, x):
    """``out + identity`` of a library residual block, computed by hand."""
    out = res_block.relu(res_block.norm1(res_block.conv1(x)))
    if hasattr(res_block, 'conv3'):
        out = res_block.relu(res_block.norm2(res_block.conv2(out)))
        out = res_block.norm3(res_block.conv3(out))
    else:
        out = res_block.norm2(res_block.conv2(out))
    identity = x if res_block.downsample is None else res_block.downsample(x)
    return out + identity


def assert_same(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# the library's behaviour without after_add blocks


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_without_after_add_equals_library(kind, depth):
    plugins = gc_after_conv3(depth)
    ours, plain = build(kind, depth, plugins=plugins), parent(
        kind, depth, plugins=plugins)
    assert list(ours.state_dict()) == list(plain.state_dict())
    activate(plain)
    ours.load_state_dict(plain.state_dict(), strict=True)
    for model in (ours, plain):
        model.eval()
    for got, want in zip(ours(image()), plain(image())):
        assert_same(got, want)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_residual_blocks_without_a_block_compute_the_library_forward(
        kind, depth, train):
    # layer3 is built from the after_add-capable class; only its
    # last-but-one residual block gets a block.
    plugins = gc_after_conv3(depth)
    ours = build(kind, depth,
                 plugins=(plugins or []) + [after_add(blocks=(-2, ))])
    plain = activate(parent(kind, depth, plugins=plugins))
    result = ours.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == block_keys(ours)
    assert result.unexpected_keys == []
    ours.train(train)
    plain.train(train)
    count = LAYER3_BLOCKS[depth]
    x = torch.randn(2, ours.layer3[0].conv1.in_channels, 8, 8)
    for i in range(count):
        assert type(ours.layer3[i]) is not type(plain.layer3[i])
        with torch.no_grad():
            want = plain.layer3[i](x)
            if i != count - 2:
                assert_same(ours.layer3[i](x), want)
        x = want


# position


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_block_sits_after_the_add_before_the_relu(kind, depth):
    model = build(kind, depth, plugins=[after_add(blocks=(-2, ))],
                  zero_init_residual=False)
    activate(model)
    model.eval()
    index = LAYER3_BLOCKS[depth] - 2
    res_block = model.layer3[index]
    seen = {}

    def record(name):
        def hook(_, args, out):
            seen[name] = (args[0].clone(), out.clone())

        return hook

    res_block.register_forward_hook(record('residual'))
    res_block.nonlocal_block.register_forward_hook(record('block'))
    model(image())
    residual_in, residual_out = seen['residual']
    block_in, block_out = seen['block']
    with torch.no_grad():
        expected_in = conv_path_plus_identity(res_block, residual_in)
    assert (block_in < 0).any()  # before the ReLU
    torch.testing.assert_close(block_in, expected_in)
    assert not torch.allclose(block_out, block_in)  # not the identity
    assert_same(residual_out, torch.relu(block_out))


@pytest.mark.parametrize('kind', KINDS)
def test_blocks_at_one_residual_block_apply_in_list_order(kind):
    plugins = [
        after_add(dict(NL, postfix='_a'), blocks=(-2, )),
        after_add(GC, blocks=(4, )),  # the same residual block
    ]
    model = build(kind, plugins=plugins)
    res_block = model.layer3[4]
    assert res_block.after_add_names == ['nonlocal_block_a', 'context_block']
    activate(model)
    model.eval()
    x = torch.randn(1, res_block.conv1.in_channels, 4, 4)
    with torch.no_grad():
        expected = conv_path_plus_identity(res_block, x)
        expected = res_block.context_block(res_block.nonlocal_block_a(
            expected))
        assert_same(res_block(x), torch.relu(expected))


# which residual blocks, and the keys


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_blocks_selects_residual_blocks(kind, depth):
    count = LAYER3_BLOCKS[depth]
    model = build(kind, depth, plugins=[after_add(DNL, blocks=(-2, ))])
    chosen = [i for i, block in enumerate(model.layer3)
              if getattr(block, 'after_add_names', None)]
    assert chosen == [count - 2]
    prefixes = {key.split('.dnl_det_block.')[0] for key in block_keys(model)}
    assert prefixes == {f'layer3.{count - 2}'}
    plain = parent(kind, depth)
    assert set(model.state_dict()) - set(plain.state_dict()) == block_keys(
        model)
    # Other stages keep the library's residual blocks.
    assert type(model.layer2[0]) is type(plain.layer2[0])


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_default_is_every_residual_block_of_the_stage(kind, depth):
    count = LAYER3_BLOCKS[depth]
    model = build(kind, depth, plugins=[after_add()])
    for i in range(count):
        assert model.layer3[i].after_add_names == ['nonlocal_block']
        assert type(model.layer3[i].nonlocal_block) is NonLocal2D
    channels = model.layer3[0].conv1.out_channels * model.block.expansion
    assert model.layer3[0].nonlocal_block.in_channels == channels
    assert {key.split('.nonlocal_block.')[0]
            for key in block_keys(model)} == {
                f'layer3.{i}' for i in range(count)}


# init, loading


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
@pytest.mark.parametrize('cfg', [NL, dict(type='ContextBlock', ratio=1 / 4)],
                         ids=['NonLocal2D', 'mmcv-ContextBlock'])
def test_identity_at_init_and_plain_weights_load(kind, depth, cfg):
    torch.manual_seed(0)
    options = dict(zero_init_residual=False)  # non-trivial residual branches
    ours = build(kind, depth, plugins=[after_add(cfg)], **options)
    ours.init_weights()  # Kaiming on every conv, then the blocks' own init
    plain = activate(parent(kind, depth, **options))
    blocks = {k: v.clone() for k, v in ours.state_dict().items()
              if k in block_keys(ours)}
    result = ours.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == set(blocks)
    assert result.unexpected_keys == []
    for key, value in blocks.items():
        assert_same(ours.state_dict()[key], value)
    ours.eval()
    plain.eval()
    for got, want in zip(ours(image()), plain(image())):
        assert_same(got, want)


def test_mmcv_context_block_is_reset_by_init_weights():
    model = build('mmdet', plugins=[after_add(
        dict(type='ContextBlock', ratio=1 / 4), blocks=(0, ))])
    block = model.layer3[0].context_block
    assert type(block) is MmcvContextBlock
    activate(block)
    model.init_weights()
    last = block.channel_add_conv[-1]
    assert not last.weight.any() and not last.bias.any()


# training


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_gradients_reach_the_block(kind, depth):
    model = build(kind, depth, plugins=[after_add(DNL, blocks=(-2, ))])
    block = activate(model.layer3[-2].dnl_det_block)
    model.train()
    sum(out.sum() for out in model(torch.randn(2, 3, 32, 32))).backward()
    zero = exactly_zero_grads(block)
    params = dict(block.named_parameters())
    assert params
    assert not [n for n, p in params.items() if p.grad is None]
    assert not [n for n, p in params.items()
                if n not in zero and not p.grad.any()]


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_with_cp_gives_same_outputs_and_gradients(kind, depth):
    results = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = build(kind, depth, plugins=[after_add(blocks=(-2, ))],
                      with_cp=with_cp)
        activate(model)
        model.eval()
        x = image().requires_grad_()
        outs = model(x)
        sum(out.sum() for out in outs).backward()
        results.append(list(outs) + [x.grad] + [
            p.grad for p in model.layer3[-2].nonlocal_block.parameters()
        ])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth', DEPTHS)
def test_frozen_stages_freeze_the_block(kind, depth):
    plugins = [after_add(stages=(False, False, True, True))]
    model = build(kind, depth, plugins=plugins, frozen_stages=3)
    model.train()
    frozen, trained = (model.layer3[0].nonlocal_block,
                       model.layer4[0].nonlocal_block)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.training
    assert all(p.requires_grad for p in trained.parameters())
    assert trained.training


# configs


@pytest.mark.parametrize('scope, registry, backbone, cls', [
    ('mmdet', DET_MODELS, 'nonlocal_plugin.ResNetNL', ResNetNL),
    ('mmseg', SEG_MODELS, 'nonlocal_plugin.ResNetV1cNL', ResNetV1cNL),
], ids=KINDS)
def test_builds_from_config(scope, registry, backbone, cls):
    cfg = dict(type=backbone, depth=50, **SMALL,
               plugins=[after_add(DNL, blocks=(-2, ))])
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert type(model) is cls
    assert 'layer3.4.dnl_det_block.gamma' in model.state_dict()


# bad input


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth, plugin, error, match', [
    (50, dict(cfg=NL, position='after_conv3', blocks=(0, )), ValueError,
     r"'blocks'.*'after_add'.*'after_conv3'"),
    (18, dict(cfg=NL, position='after_conv1', blocks=(0, )), ValueError,
     r"'blocks'.*'after_add'.*'after_conv1'"),
    (50, after_add(blocks=(6, )), ValueError,
     r"\['blocks'\] has index 6, out of range .* use -6 to 5"),
    (50, after_add(blocks=(-7, )), ValueError, 'out of range'),
    (18, after_add(blocks=(2, )), ValueError, 'use -2 to 1'),
    (50, after_add(blocks=-2), TypeError, r"\['blocks'\] must be"),
    (50, after_add(blocks=()), TypeError, r"\['blocks'\] must be"),
    (50, after_add(blocks=(True, )), TypeError, r"\['blocks'\] must be"),
    (50, after_add(blocks=(1.0, )), TypeError, r"\['blocks'\] must be"),
    (50, after_add(blocks=(1, -5)), ValueError, 'twice'),
    (50, after_add(after=(1, )), ValueError, 'unknown keys'),
    (50, after_add(stages=(True, )), ValueError, 'num_stages'),
    (18, after_add(cfg='NonLocal2d'), TypeError, 'cfg'),
])
def test_bad_after_add(kind, depth, plugin, error, match):
    with pytest.raises(error, match=match) as info:
        build(kind, depth, plugins=[plugin])
    assert 'plugins[0]' in str(info.value)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('depth, plugins', [
    (50, [after_add(), after_add()]),
    (50, [after_add(blocks=(0, )),
          dict(cfg=NL, stages=RES4, position='after_conv3')]),
    (18, [after_add(GC), after_add(GC, blocks=(0, ))]),
], ids=['after_add-twice', 'after_conv3-too', 'basic-block'])
def test_same_type_twice_needs_postfix(kind, depth, plugins):
    with pytest.raises(ValueError, match='postfix'):
        build(kind, depth, plugins=plugins)
    plugins = [dict(plugin, cfg=dict(plugin['cfg'], postfix=f'_{i}'))
               for i, plugin in enumerate(plugins)]
    build(kind, depth, plugins=plugins)  # distinct names build
