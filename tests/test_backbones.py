"""ResNetNL and ResNetV1cNL: weight names, identity at init, placement."""
import pytest
import torch
from conftest import activate, exactly_zero_grads
from mmcv.cnn.bricks import ContextBlock as MmcvContextBlock
from mmcv.cnn.bricks import NonLocal2d as MmcvNonLocal2d
from mmdet.models.backbones import ResNet as DetResNet
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import DefaultScope
from mmseg.models.backbones import ResNetV1c as SegResNetV1c
from mmseg.registry import MODELS as SEG_MODELS

from nonlocal_plugin import ContextBlock, NonLocal2D
from nonlocal_plugin.backbones import ResNetNL, ResNetV1cNL

pytestmark = pytest.mark.usefixtures('one_thread')

# helpers

KINDS = ('mmdet', 'mmseg')
OURS = {'mmdet': ResNetNL, 'mmseg': ResNetV1cNL}
PARENTS = {'mmdet': DetResNet, 'mmseg': SegResNetV1c}
SMALL = dict(base_channels=8, stem_channels=8)  # fast on 2 shared cores
RES4 = (False, False, True, False)  # the paper's res4 is mmdet's layer3
NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)


def build(kind, depth=50, small=True, **options):
    return OURS[kind](depth=depth, **(SMALL if small else {}), **options)


def parent(kind, depth=50, small=True, **options):
    return PARENTS[kind](depth=depth, **(SMALL if small else {}), **options)


def nl_after(*after, stages=RES4, cfg=NL):
    return [dict(cfg=cfg, stages=stages, after=after)]


def image(size=64, seed=0):
    return torch.randn(1, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Forward hooks that record clones of inputs and outputs, in order."""

    def __init__(self):
        self.calls = []
        self.handles = []

    def output(self, name, module):
        def hook(_, args, out):
            self.calls.append((name, args[0].clone(), out.clone()))

        self.handles.append(module.register_forward_hook(hook))

    def input(self, name, module):
        def hook(_, args):
            self.calls.append((name, args[0].clone(), None))

        self.handles.append(module.register_forward_pre_hook(hook))

    def names(self):
        return [name for name, _, _ in self.calls]

    def one(self, name):
        found = [call for call in self.calls if call[0] == name]
        assert len(found) == 1, f'{name} ran {len(found)} times'
        return found[0][1:]


def assert_same(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def _zip_equal(*sequences):
    """``zip(*sequences, strict=True)`` for Python < 3.10."""
    sequences = [list(seq) for seq in sequences]
    lengths = [len(seq) for seq in sequences]
    assert len(set(lengths)) <= 1, f'lengths differ: {lengths}'
    return zip(*sequences)


# weight names


@pytest.mark.parametrize('kind', KINDS)
def test_resnet_keys_unchanged_and_plain_weights_load(kind):
    ours = build(kind, small=False, between_blocks=nl_after(-2))
    plain = parent(kind, small=False)
    ours_keys, plain_keys = set(ours.state_dict()), set(plain.state_dict())
    extra = ours_keys - plain_keys
    assert plain_keys <= ours_keys
    assert extra and all(
        k.startswith('between_layer3.after4_nonlocal_block.') for k in extra)
    # A checkpoint without the blocks' keys loads strictly; the blocks keep
    # their weights (the identity at init).
    blocks = {k: v.clone() for k, v in ours.state_dict().items()
              if k in extra}
    result = ours.load_state_dict(plain.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in blocks.items():
        assert_same(ours.state_dict()[key], value)


# identity at init


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('cfg', [
    NL, GC,
    dict(type='nonlocal_plugin.DisentangledNonLocal'),
    dict(type='NonLocal2d'),
    dict(type='ContextBlock', ratio=1 / 4),
], ids=['NonLocal2D', 'ContextBlock', 'DNL', 'mmcv-NonLocal2d',
        'mmcv-ContextBlock'])
def test_identity_after_init_weights(kind, cfg):
    torch.manual_seed(0)
    options = dict(zero_init_residual=False)  # non-trivial residual branches
    ours = build(kind, between_blocks=nl_after(0, -1, cfg=cfg), **options)
    ours.init_weights()  # Kaiming on every conv, then the blocks' own init
    plain = parent(kind, **options)
    plain.load_state_dict({
        k: v
        for k, v in ours.state_dict().items() if not k.startswith('between_')
    })
    ours.eval()
    plain.eval()
    for got, want in _zip_equal(ours(image()), plain(image())):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('cfg', [GC, dict(type='ContextBlock', ratio=1 / 4)],
                         ids=['ContextBlock', 'mmcv-ContextBlock'])
def test_basic_block_plugins_identity_after_init_weights(kind, cfg):
    plugins = [
        dict(cfg=NL, position='after_conv1'),
        dict(cfg=cfg, position='after_conv2', stages=(False, True, True, True))
    ]
    zero_init = build(kind, depth=18, plugins=plugins)
    zero_init.init_weights()
    assert not zero_init.layer2[0].bn2.weight.any()  # the parent's default
    torch.manual_seed(0)
    options = dict(zero_init_residual=False)  # else the plugins are masked
    ours = build(kind, depth=18, plugins=plugins, **options)
    ours.init_weights()
    plain = parent(kind, depth=18, **options)
    plain.load_state_dict(ours.state_dict(), strict=False)
    ours.eval()
    plain.eval()
    for got, want in _zip_equal(ours(image()), plain(image())):
        torch.testing.assert_close(got, want)


# placement


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('after, index', [(-2, 4), (1, 1)])
def test_block_runs_after_the_chosen_residual_block(kind, after, index):
    model = build(kind, between_blocks=nl_after(after))
    model.eval()
    assert list(model.between_layer3) == [f'after{index}_nonlocal_block']
    block = activate(model.between_layer3[f'after{index}_nonlocal_block'])
    rec = Recorder()
    rec.output('residual', model.layer3[index])
    rec.output('block', block)
    rec.input('next', model.layer3[index + 1])
    model(image())
    assert rec.names() == ['residual', 'block', 'next']
    _, residual_out = rec.one('residual')
    block_in, block_out = rec.one('block')
    next_in, _ = rec.one('next')
    assert_same(block_in, residual_out)
    assert not torch.allclose(block_out, block_in)  # it is not the identity
    assert_same(next_in, block_out)


@pytest.mark.parametrize('kind', KINDS)
def test_block_after_last_residual_block_gives_stage_output(kind):
    model = build(kind, between_blocks=nl_after(-1), out_indices=(2, ))
    model.eval()
    block = activate(model.between_layer3['after5_nonlocal_block'])
    rec = Recorder()
    rec.output('block', block)
    (out, ) = model(image())
    assert_same(out, rec.one('block')[1])


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('order', [('nl', 'gc'), ('gc', 'nl')])
def test_blocks_on_one_residual_block_apply_in_list_order(kind, order):
    cfgs = {'nl': NL, 'gc': GC}
    keys = {'nl': 'after4_nonlocal_block', 'gc': 'after4_context_block'}
    # -2 and 4 name the same block of the 6-block layer3
    between = [
        dict(cfg=cfgs[order[0]], stages=RES4, after=(-2, )),
        dict(cfg=cfgs[order[1]], stages=RES4, after=(4, ))
    ]
    model = build(kind, between_blocks=between)
    model.eval()
    first, second = (activate(model.between_layer3[keys[name]], seed)
                     for seed, name in enumerate(order))
    rec = Recorder()
    rec.output('residual', model.layer3[4])
    rec.output(order[0], first)
    rec.output(order[1], second)
    rec.input('next', model.layer3[5])
    model(image())
    assert rec.names() == ['residual', *order, 'next']
    _, residual_out = rec.one('residual')
    with torch.no_grad():
        expected = second(first(residual_out))
    torch.testing.assert_close(rec.one('next')[0], expected)


@pytest.mark.parametrize('kind', KINDS)
def test_same_type_twice_needs_postfix(kind):
    between = [
        dict(cfg=dict(NL, postfix=1), stages=RES4, after=(-2, )),
        dict(cfg=dict(NL, postfix=2), stages=RES4, after=(-2, ))
    ]
    model = build(kind, between_blocks=between)
    assert list(model.between_layer3) == [
        'after4_nonlocal_block1', 'after4_nonlocal_block2'
    ]
    with pytest.raises(ValueError, match='postfix'):
        build(kind, between_blocks=nl_after(-2) + nl_after(-2))


def test_nl_paper_five_block_layout():
    between = [
        dict(cfg=NL, stages=(False, True, False, False), after=(1, 3)),
        dict(cfg=NL, stages=RES4, after=(1, 3, 5)),
    ]
    model = build('mmdet', between_blocks=between)
    names = [name for name, _ in model.named_children()
             if name.startswith('between_')]
    assert names == ['between_layer2', 'between_layer3']
    assert list(model.between_layer2) == [
        'after1_nonlocal_block', 'after3_nonlocal_block'
    ]
    assert list(model.between_layer3) == [
        'after1_nonlocal_block', 'after3_nonlocal_block',
        'after5_nonlocal_block'
    ]


def test_default_stages_is_every_stage():
    model = build('mmdet', between_blocks=[dict(cfg=GC, after=(0, ))])
    for stage in range(1, 5):
        blocks = getattr(model, f'between_layer{stage}')
        assert list(blocks) == ['after0_context_block']
        assert blocks['after0_context_block'].in_channels == 8 * 2**(
            stage + 1)


# the parent's options


@pytest.mark.parametrize('kind', KINDS)
def test_frozen_stages_and_norm_eval_cover_inserted_blocks(kind):
    cfg = dict(NL, norm_cfg=dict(type='BN'))
    between = [
        dict(cfg=cfg, stages=(False, True, True, False), after=(-1, ))
    ]
    model = build(kind, between_blocks=between, frozen_stages=2,
                  norm_eval=True)
    model.train()
    frozen, trained = model.between_layer2, model.between_layer3
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.training
    assert all(p.requires_grad for p in trained.parameters())
    assert trained.training
    norm = trained['after5_nonlocal_block'].conv_out.norm
    assert not norm.training  # norm_eval


@pytest.mark.parametrize('kind', KINDS)
def test_with_cp_gives_same_outputs_and_gradients(kind):
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = build(kind, between_blocks=nl_after(-2), with_cp=with_cp)
        activate(model.between_layer3)
        model.eval()
        x = image().requires_grad_()
        sum(out.sum() for out in model(x)).backward()
        grads.append([x.grad] + [
            p.grad for p in model.between_layer3.parameters()
        ])
    for got, want in _zip_equal(*grads):
        torch.testing.assert_close(got, want)


# plugins on BasicBlock (depths 18 and 34)


@pytest.mark.parametrize('kind', KINDS)
def test_basic_block_plugin_after_conv1(kind):
    plugins = [dict(cfg=NL, stages=(True, False, False, False),
                    position='after_conv1')]
    model = build(kind, depth=18, plugins=plugins)
    model.eval()
    res_block = model.layer1[1]
    plugin = activate(res_block.nonlocal_block)
    assert not hasattr(model.layer2[0], 'nonlocal_block')
    rec = Recorder()
    rec.output('bn1', res_block.bn1)
    rec.output('plugin', plugin)
    rec.input('conv2', res_block.conv2)
    model(image())
    assert rec.names() == ['bn1', 'plugin', 'conv2']
    plugin_in, plugin_out = rec.one('plugin')
    assert_same(plugin_in, torch.relu(rec.one('bn1')[1]))
    assert_same(rec.one('conv2')[0], plugin_out)


@pytest.mark.parametrize('kind', KINDS)
def test_basic_block_plugin_after_conv2(kind):
    plugins = [dict(cfg=NL, stages=(True, False, False, False),
                    position='after_conv2')]
    model = build(kind, depth=18, plugins=plugins)
    model.eval()
    res_block = model.layer1[1]  # no downsample
    plugin = activate(res_block.nonlocal_block)
    rec = Recorder()
    rec.output('res_block', res_block)
    rec.output('bn2', res_block.bn2)
    rec.output('plugin', plugin)
    model(image())
    block_in, block_out = rec.one('res_block')
    plugin_in, plugin_out = rec.one('plugin')
    assert_same(plugin_in, rec.one('bn2')[1])
    assert_same(block_out, torch.relu(plugin_out + block_in))


@pytest.mark.parametrize('kind', KINDS)
def test_basic_block_stacked_plugins_apply_in_order(kind):
    plugins = [
        dict(cfg=GC, position='after_conv2'),
        dict(cfg=dict(NL, postfix=1), position='after_conv2'),
    ]
    model = build(kind, depth=18, plugins=plugins)
    model.eval()
    res_block = model.layer2[1]
    first = activate(res_block.context_block, seed=1)
    second = activate(res_block.nonlocal_block1, seed=2)
    rec = Recorder()
    rec.output('res_block', res_block)
    rec.output('bn2', res_block.bn2)
    rec.output('first', first)
    rec.output('second', second)
    model(image())
    assert rec.names() == ['bn2', 'first', 'second', 'res_block']
    first_in, first_out = rec.one('first')
    second_in, second_out = rec.one('second')
    assert_same(first_in, rec.one('bn2')[1])
    assert_same(second_in, first_out)
    block_in, block_out = rec.one('res_block')
    assert_same(block_out, torch.relu(second_out + block_in))


@pytest.mark.parametrize('kind', KINDS)
def test_basic_block_plugins_get_gradients(kind):
    plugins = [
        dict(cfg=NL, position='after_conv1', stages=(False, True, False,
                                                     False)),
        dict(cfg=GC, position='after_conv2', stages=(False, True, False,
                                                     False)),
    ]
    model = build(kind, depth=18, plugins=plugins)
    model.train()
    params, exactly_zero = {}, set()
    for i, res_block in enumerate(model.layer2):
        for name in ('nonlocal_block', 'context_block'):
            block = getattr(res_block, name)
            activate(block, seed=i)
            prefix = f'layer2.{i}.{name}.'
            exactly_zero |= {prefix + n for n in exactly_zero_grads(block)}
            for p_name, param in block.named_parameters():
                params[prefix + p_name] = param
    sum(out.sum() for out in model(torch.randn(2, 3, 32, 32))).backward()
    no_grad = [n for n, p in params.items() if p.grad is None]
    # A gradient that is zero in exact arithmetic (the key bias and GC's
    # mask bias, under their softmaxes) comes out as exactly 0 or as
    # rounding noise depending on the CPU's kernels and the torch release:
    # it must exist, but may be zero.
    zero_grad = [n for n, p in params.items()
                 if n not in exactly_zero and p.grad is not None
                 and not p.grad.any()]
    assert not no_grad and not zero_grad


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('plugins, error, match', [
    ([dict(cfg=NL, position='after_conv3')], ValueError, 'after_conv3'),
    ([dict(cfg=NL, position='after_conv1', stage=(True, ) * 4)], ValueError,
     'stage'),
    ([dict(cfg=NL, position='after_conv1', stages=(True, ))], ValueError,
     'num_stages'),
    ([dict(cfg='NonLocal2d', position='after_conv1')], TypeError, 'cfg'),
    (dict(cfg=NL, position='after_conv1'), TypeError, 'list'),
])
def test_basic_block_bad_plugins(kind, plugins, error, match):
    with pytest.raises(error, match=match) as info:
        build(kind, depth=18, plugins=plugins)
    assert 'plugins' in str(info.value)


@pytest.mark.parametrize('kind', KINDS)
def test_bottleneck_plugins_keep_parent_behaviour(kind):
    plugins = [dict(cfg=GC, position='after_conv3',
                    stages=(False, True, True, True))]
    ours = build(kind, plugins=plugins)
    plain = parent(kind, plugins=plugins)
    assert list(ours.state_dict()) == list(plain.state_dict())
    assert type(ours.layer2[0]) is type(plain.layer2[0])


# building from configs


@pytest.mark.parametrize('scope, registry, backbone, cls', [
    ('mmdet', DET_MODELS, 'nonlocal_plugin.ResNetNL', ResNetNL),
    ('mmseg', SEG_MODELS, 'nonlocal_plugin.ResNetV1cNL', ResNetV1cNL),
], ids=KINDS)
@pytest.mark.parametrize('block, block_cls, key', [
    (NL, NonLocal2D, 'after4_nonlocal_block'),
    (dict(type='NonLocal2d'), MmcvNonLocal2d, 'after4_nonlocal_block'),
    (GC, ContextBlock, 'after4_context_block'),
    (dict(type='ContextBlock', ratio=1 / 4), MmcvContextBlock,
     'after4_context_block'),
], ids=['NonLocal2D', 'mmcv-NonLocal2d', 'ContextBlock', 'mmcv-ContextBlock'])
def test_builds_from_config(scope, registry, backbone, cls, block, block_cls,
                            key):
    cfg = dict(type=backbone, depth=50, **SMALL,
               between_blocks=nl_after(-2, cfg=block))
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert type(model) is cls
    assert type(model.between_layer3[key]) is block_cls


@pytest.mark.parametrize('scope, registry, backbone', [
    ('mmdet', DET_MODELS, 'nonlocal_plugin.ResNetNL'),
    ('mmseg', SEG_MODELS, 'nonlocal_plugin.ResNetV1cNL'),
], ids=KINDS)
def test_basic_block_plugins_build_from_config(scope, registry, backbone):
    cfg = dict(type=backbone, depth=18, **SMALL, plugins=[
        dict(cfg=dict(type='ContextBlock', ratio=1 / 4),
             position='after_conv2')
    ])
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert type(model.layer4[1].context_block) is MmcvContextBlock


# bad between_blocks


@pytest.mark.parametrize('between, error, match', [
    (dict(cfg=NL, after=(0, )), TypeError, 'list of dicts'),
    (['NonLocal2d'], TypeError, 'dict'),
    ([dict(cfg='NonLocal2d', after=(0, ))], TypeError, 'cfg'),
    ([dict(cfg=dict(reduction=2), after=(0, ))], ValueError, 'type'),
    ([dict(cfg=NL, after=(0, ), stage=RES4)], ValueError, 'unknown'),
    ([dict(cfg=NL, after=(0, ), stages=(True, False))], ValueError,
     'num_stages=4'),
    ([dict(cfg=NL, after=(0, ), stages=(0, 0, 1, 0))], TypeError, 'bools'),
    ([dict(cfg=NL, stages=RES4)], TypeError, 'after'),
    ([dict(cfg=NL, after=-2, stages=RES4)], TypeError, 'after'),
    ([dict(cfg=NL, after=(), stages=RES4)], TypeError, 'after'),
    ([dict(cfg=NL, after=(True, ), stages=RES4)], TypeError, 'after'),
    ([dict(cfg=NL, after=(2, ), stages=RES4)], ValueError, 'out of range'),
    ([dict(cfg=NL, after=(-3, ), stages=RES4)], ValueError, 'out of range'),
    ([dict(cfg=NL, after=(1, -1), stages=RES4)], ValueError, 'twice'),
])
def test_bad_between_blocks(between, error, match):
    with pytest.raises(error, match=match) as info:
        build('mmdet', depth=18, between_blocks=between)
    assert 'between_blocks' in str(info.value)
