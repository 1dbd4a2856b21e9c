"""nonlocal_plugin.InsertBlocks: module-path patterns, the keys they give,
the inferred in_channels, and the errors at build time and on forward."""
import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS

from nonlocal_plugin.backbones import insert_blocks

pytestmark = pytest.mark.usefixtures('one_thread')

# helpers

SMALL = dict(type='mmdet.ResNet', depth=50, base_channels=8, stem_channels=8)
NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)
HRNET_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                num_blocks=(1, ), num_channels=(8, )),
    stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                num_blocks=(1, 1), num_channels=(8, 16)),
    stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
    stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64)))


def build(blocks, **options):
    return insert_blocks(dict(SMALL, **options), blocks=blocks)


def blocks_of(model):
    return [f'{name}.{key}' for name, container in model.named_children()
            if name.startswith('between') for key in container]


# paths and keys


@pytest.mark.parametrize('entries, keys', [
    ([dict(cfg=NL, after='layer3.4')],
     ['between_layer3.after4_nonlocal_block']),
    ([dict(cfg=NL, after='layer3.-2')],
     ['between_layer3.after4_nonlocal_block']),
    # NL paper, 1 block: before res4's last block is after block 4 of 6.
    ([dict(cfg=NL, before='layer3.-1')],
     ['between_layer3.after4_nonlocal_block']),
    # NL paper, 5 blocks: every other block of res3 (4) and res4 (6).
    ([dict(cfg=NL, after=['layer2.1::2', 'layer3.1::2'])], [
        'between_layer2.after1_nonlocal_block',
        'between_layer2.after3_nonlocal_block',
        'between_layer3.after1_nonlocal_block',
        'between_layer3.after3_nonlocal_block',
        'between_layer3.after5_nonlocal_block'
    ]),
    ([dict(cfg=NL, after='layer[23].1::2')], [
        'between_layer2.after1_nonlocal_block',
        'between_layer2.after3_nonlocal_block',
        'between_layer3.after1_nonlocal_block',
        'between_layer3.after3_nonlocal_block',
        'between_layer3.after5_nonlocal_block'
    ]),
    ([dict(cfg=GC, after='layer4.*')],
     [f'between_layer4.after{i}_context_block' for i in range(3)]),
    ([dict(cfg=GC, after='layer4.-1.bn3')],
     ['between_layer4_2.after_bn3_context_block']),
    ([dict(cfg=NL, before='layer1.0')],
     ['between_layer1.before0_nonlocal_block']),
    ([dict(cfg=GC, after='layer2')], ['between.after_layer2_context_block']),
    ([dict(cfg=NL, after='layer3.-2'), dict(cfg=GC, before='layer3.5')], [
        'between_layer3.after4_nonlocal_block',
        'between_layer3.after4_context_block'
    ]),
], ids=['index', 'negative', 'before', 'nl5-list', 'nl5-glob', 'star',
        'inside', 'first', 'stage', 'two'])
def test_paths_name_the_places_and_keys(entries, keys):
    model = build(entries)
    assert blocks_of(model) == keys
    plain_keys = set(DET_MODELS.build(SMALL).state_dict())
    own = {k for k in model.state_dict() if not k.startswith('between')}
    assert own == plain_keys


def test_in_channels_is_the_width_of_the_place():
    model = build([dict(cfg=GC, after=['layer*.0', 'layer1.0.bn1']),
                   dict(cfg=NL, before='layer2.0')])
    layers = [model.between_layer1, model.between_layer2,
              model.between_layer3, model.between_layer4]
    assert [c['after0_context_block'].in_channels
            for c in layers] == [32, 64, 128, 256]
    assert model.between_layer1_0['after_bn1_context_block'].in_channels == 8
    # The first block of layer2 takes layer1's 32 channels.
    assert model.between_layer2['before0_nonlocal_block'].in_channels == 32


# errors at build time


@pytest.mark.parametrize('entry, error, match', [
    (dict(cfg=NL, after='layer5.1'), ValueError,
     r"'layer5.1' matches no module.*Nearest existing modules: layer4"),
    (dict(cfg=NL, after='layer3.6'), ValueError,
     r"'layer3.6' matches no module.*indices 0 to 5.*layer3\.5"),
    (dict(cfg=NL, after='layer3.4.conv9'), ValueError,
     r'Nearest existing modules: layer3\.4\.conv3'),
    (dict(cfg=NL, after='layer3..4'), ValueError, 'empty segment'),
    (dict(cfg=NL, after='maxpool'), ValueError,
     r"after 'maxpool'.*cannot infer in_channels.*running the model"),
    (dict(cfg=dict(NL, in_channels=12), after='layer3.4'), ValueError,
     r"'layer3.4' outputs 128 channels.*change the shape"),
    (dict(cfg=dict(type='nonlocal_plugin.NonLocal1D'), after='layer3.4'),
     ValueError, r"after 'layer3.4'.*NonLocal1D fails on a \[1, 128, 8, 8\]"),
    (dict(cfg=NL), ValueError, "exactly one of 'after' and 'before'"),
    (dict(cfg=NL, after='layer3.4', before='layer3.5'), ValueError,
     'exactly one'),
    (dict(cfg=NL, after=[]), TypeError, 'non-empty list'),
    (dict(cfg=NL, after=4), TypeError, 'module path'),
    (dict(cfg=NL, at='layer3.4'), ValueError, r"unknown keys \['at'\]"),
    (dict(cfg='NonLocal2d', after='layer3.4'), TypeError, "'type'"),
], ids=['name', 'index', 'leaf', 'empty', 'width', 'given-width', 'rank',
        'neither', 'both', 'no-path', 'not-str', 'unknown', 'cfg'])
def test_bad_entries_fail_at_build_time(entry, error, match):
    with pytest.raises(error, match=match):
        build([entry])


def test_same_block_twice_at_one_place_needs_postfix():
    with pytest.raises(ValueError, match='postfix'):
        build([dict(cfg=NL, after='layer3.4'),
               dict(cfg=NL, before='layer3.5')])
    model = build([dict(cfg=dict(NL, postfix=1), after='layer3.4'),
                   dict(cfg=dict(NL, postfix=2), before='layer3.5')])
    assert list(model.between_layer3) == [
        'after4_nonlocal_block1', 'after4_nonlocal_block2'
    ]


def test_module_lists_are_refused_and_uncalled_modules_fail_on_forward():
    with pytest.raises(ValueError, match='never called itself'):
        insert_blocks(dict(type='mmdet.HRNet', extra=HRNET_EXTRA),
                      blocks=[dict(cfg=dict(NL, in_channels=8),
                                   after='transition1')])
    # A BasicBlock's relu runs twice (after bn1 and after the add).
    model = build([dict(cfg=dict(GC, in_channels=8), after='layer1.1.relu')],
                  depth=18)
    with pytest.raises(RuntimeError, match="'layer1.1.relu'.*ran 2 times"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize('type_name', ['NonLocal2DD',
                                       'nonlocal_plugin.Nonlocal2D'])
def test_misspelled_block_type_is_named_with_close_matches(type_name):
    with pytest.raises(KeyError) as info:
        build([dict(cfg=dict(type=type_name), after='layer3.0')])
    message = str(info.value)
    assert f"is '{type_name}'" in message or f"'{type_name}'" in message
    assert 'NonLocal2D' in message and 'Cannot find None' not in message
