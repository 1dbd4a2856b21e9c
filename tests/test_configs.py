"""Every config loads, builds through its library's registry, and puts the
blocks where its header says.

The real configs are built with their pretrained weights removed, so nothing
is downloaded, and nothing is run forward.
"""
import glob
import os.path as osp
import re
from functools import lru_cache

import pytest
import torch
from mmdet.models.backbones import ResNet as DetResNet
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from torch import nn

from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    DisentangledNonLocalDet2D,
    NonLocal2D,
)
from nonlocal_plugin.apis import codebase_of

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs')
CONFIGS = sorted(
    osp.relpath(path, CONFIG_DIR)
    for path in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if not {'_base_', 'ablations'} & set(
        osp.relpath(path, CONFIG_DIR).split(osp.sep)))

NL, GC, DNL = 'NonLocal2D', 'ContextBlock', 'DisentangledNonLocal'
DNL_DET = 'DisentangledNonLocalDet2D'
R50_GC_C3_C5 = [('layer2', f'block{i}', GC) for i in range(4)] + [
    ('layer3', f'block{i}', GC) for i in range(6)
] + [('layer4', f'block{i}', GC) for i in range(3)]
X101_GC_C3_C5 = [('layer2', f'block{i}', GC) for i in range(4)] + [
    ('layer3', f'block{i}', GC) for i in range(23)
] + [('layer4', f'block{i}', GC) for i in range(3)]

# Where the header of each config puts its blocks: (stage, site, class),
# site 'afterI' for a block after residual block I (between_blocks) and
# 'blockI' for a plugin inside residual block I.
PLACEMENT = {
    'mmdet/mask-rcnn_r50_fpn_1x_coco.py': [],
    'mmdet/mask-rcnn_r50-syncbn_fpn_1x_coco.py': [],
    'mmdet/mask-rcnn_r50-syncbn_4conv1fc_1x_coco.py': [],
    # R50's res4 (layer3) has 6 residual blocks: -2 is block 4.
    'mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py': [('layer3', 'after4', NL)],
    'mmdet/mask-rcnn_r50-nl-c3-c4_fpn_1x_coco.py': [('layer2', 'after2', NL),
                                                    ('layer3', 'after4', NL)],
    'mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py': R50_GC_C3_C5,
    'mmdet/mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py': R50_GC_C3_C5,
    # The DNL table's rows: inside residual block 4, after its add.
    'mmdet/mask-rcnn_r50-syncbn-nl-r4-c4_4conv1fc_1x_coco.py': [
        ('layer3', 'block4', NL)
    ],
    'mmdet/mask-rcnn_r50-syncbn-dnl-r4-c4_4conv1fc_1x_coco.py': [
        ('layer3', 'block4', DNL_DET)
    ],
    # ResNet-18's res4 has 2 residual blocks: -2 is block 0.
    'toy/mask-rcnn_r18_fpn_toy-coco.py': [],
    'toy/mask-rcnn_r18_fpn_toy-coco-matching.py': [],
    'toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py': [('layer3', 'after0', NL)],
    'toy/mask-rcnn_r18-dnl-c4_fpn_toy-coco.py': [('layer3', 'after0', DNL)],
    # ResNet-18 has 2 basic blocks per stage; GC after conv2 in c3-c5.
    'toy/mask-rcnn_r18-gcb-r4-c3-c5_fpn_toy-coco.py': [
        (f'layer{stage}', f'block{i}', GC) for stage in (2, 3, 4)
        for i in range(2)
    ],
    'toy/fcn_r18-d8_toy-cityscapes.py': [],
    'toy/fcn_r18-d8-nl_toy-cityscapes.py': [('layer3', 'after0', NL)],
    # ResNeXt-101 has 4, 23 and 3 bottlenecks in c3-c5; InsertBlocks puts
    # the NL block before res4's last one, after block 21.
    'mmdet/mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py': [],
    'mmdet/mask-rcnn_x101-32x4d-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py':
    X101_GC_C3_C5,
    'mmdet/mask-rcnn_x101-32x4d-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py':
    X101_GC_C3_C5,
    'mmdet/mask-rcnn_x101-32x4d-syncbn-nl-c4_fpn_1x_coco.py': [
        ('layer3', 'after21', NL)
    ],
    # The toy RegNet has 1, 2, 4 and 1 blocks per stage.
    'toy/mask-rcnn_regnet_fpn_toy-coco.py': [],
    'toy/mask-rcnn_regnet-nl-c4_fpn_toy-coco.py': [('layer3', 'after2', NL)],
}
for _schedule in ('40k', '80k'):
    _name = f'4xb2-{_schedule}_cityscapes-512x1024.py'
    PLACEMENT.update({
        f'mmseg/fcn_r50-d8_{_name}': [],
        f'mmseg/fcn_r50-d8-nl_{_name}': [('layer3', 'after4', NL)],
        f'mmseg/fcn_r50-d8-dnl_{_name}': [('layer3', 'after4', DNL)],
        f'mmseg/fcn_r50-d8-gcb-r16-c3-c5_{_name}': R50_GC_C3_C5,
        f'mmseg/nonlocal_r50-d8_{_name}': [],
        f'mmseg/gcnet_r50-d8_{_name}': [],
        f'mmseg/dnl_r50-d8_{_name}': [],
    })
# The short names at the top level and the configs they stand for.
ENTRY_POINTS = {
    'mask_rcnn_r50.py': 'mmdet/mask-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn_r50_nl.py': 'mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py',
    'mask_rcnn_r50_gc.py':
    'mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py',
    'mask_rcnn_r50_dnl.py':
    'mmdet/mask-rcnn_r50-syncbn-dnl-r4-c4_4conv1fc_1x_coco.py',
    'fcn_r50_cityscapes.py':
    'mmseg/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    'fcn_r50_nl_cityscapes.py':
    'mmseg/fcn_r50-d8-nl_4xb2-40k_cityscapes-512x1024.py',
}
for _entry, _target in ENTRY_POINTS.items():
    PLACEMENT[_entry] = PLACEMENT[_target]

BLOCK_TYPES = (NonLocal2D, ContextBlock, DisentangledNonLocal,
               DisentangledNonLocalDet2D)

# helper functions


@lru_cache(maxsize=None)
def load(name: str) -> Config:
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def without_pretrained(node):
    """A copy of a model config with every pretrained checkpoint removed."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == 'pretrained' or (key == 'init_cfg' and isinstance(
                    value, dict) and value.get('type') == 'Pretrained'):
                out[key] = None
            else:
                out[key] = without_pretrained(value)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(without_pretrained(v) for v in node)
    return node


@lru_cache(maxsize=None)
def build_model(name: str) -> nn.Module:
    cfg = load(name)
    scope = codebase_of(cfg)
    registry = __import__(f'{scope}.registry',
                          fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(
            ConfigDict(without_pretrained(cfg.model.to_dict())))


def block_sites(backbone: nn.Module):
    """(stage, site, class name) of every block in a ResNet backbone."""
    sites = []
    for path, module in backbone.named_modules():
        if not isinstance(module, BLOCK_TYPES):
            continue
        parts = path.split('.')
        if parts[0].startswith('between_'):
            stage = parts[0][len('between_'):]
            site = re.match(r'(after\d+)_', parts[1]).group(1)
        else:
            stage, site = parts[0], f'block{parts[1]}'
        sites.append((stage, site, type(module).__name__))
    return sorted(sites)


def header(name: str) -> str:
    with open(osp.join(CONFIG_DIR, name)) as f:
        lines = []
        for line in f:
            if not line.startswith('#'):
                break
            lines.append(line)
    return ''.join(lines)


# tests


def test_every_config_is_listed():
    assert sorted(PLACEMENT) == CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_has_header_with_published_numbers(name):
    text = header(name)
    assert text, f'{name} has no header comment'
    assert 'Published' in text, f'{name}: header cites no published result'


@pytest.mark.parametrize('name', CONFIGS)
def test_builds_with_blocks_where_the_header_says(name):
    expected = 'mmdet' if osp.basename(name).startswith('mask') else 'mmseg'
    assert codebase_of(load(name)) == expected
    model = build_model(name)
    assert block_sites(model.backbone) == sorted(PLACEMENT[name])


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_entry_points_stand_for_the_detailed_configs(entry):
    assert load(entry).model == load(ENTRY_POINTS[entry]).model


def _block(name, cls):
    return next(m for m in build_model(name).backbone.modules()
                if isinstance(m, cls))


def test_nl_matches_the_nl_paper():
    block = _block('mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py', NonLocal2D)
    assert (block.in_channels, block.inter_channels) == (1024, 512)
    assert block.mode == 'embedded_gaussian' and block.use_scale
    cfg = load('mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py')
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'


def test_dnl_matches_the_official_detection_config():
    name = 'mmdet/mask-rcnn_r50-syncbn-dnl-r4-c4_4conv1fc_1x_coco.py'
    block = _block(name, DisentangledNonLocalDet2D)
    assert (block.in_channels, block.planes) == (1024, 256)
    assert block.temperature == 0.05 and block.whitening == 'channel'
    assert block.use_pairwise and block.use_unary
    assert block.unary_type == 'conv' and not block.sub_sample
    model = build_model(name)
    # after the residual add of res4's block 4, before its ReLU
    assert model.backbone.layer3[4].after_add_names == ['dnl_det_block']
    assert model.roi_head.bbox_head.num_shared_convs == 4
    for part in (model.backbone, model.neck, model.roi_head):
        assert any(isinstance(m, nn.SyncBatchNorm) for m in part.modules())


@pytest.mark.parametrize('ratio', ['r16', 'r4'])
def test_gc_matches_mmdet_gcnet(ratio):
    name = f'mmdet/mask-rcnn_r50-syncbn-gcb-{ratio}-c3-c5_fpn_1x_coco.py'
    backbone = build_model(name).backbone
    blocks = [m for m in backbone.modules() if isinstance(m, ContextBlock)]
    width = {'r16': 16, 'r4': 4}[ratio]
    assert all(b.planes == b.in_channels // width for b in blocks)
    assert all(b.fusion_types == ('channel_add', ) for b in blocks)
    assert isinstance(backbone.norm1, nn.SyncBatchNorm)
    assert not backbone.norm_eval
    # Same position as mmdet's gcnet config: after conv3 of each bottleneck.
    assert all(
        len(block.after_conv3_plugin_names) == 1 for layer in (
            backbone.layer2, backbone.layer3, backbone.layer4)
        for block in layer)


def test_torchvision_weights_still_load_into_the_nl_backbone():
    cfg = load('mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py').model.backbone
    plain = dict(cfg.to_dict())
    for key in ('type', 'between_blocks', 'init_cfg'):
        plain.pop(key)
    expected = set(DetResNet(**plain).state_dict())
    found = set(build_model(
        'mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py').backbone.state_dict())
    assert expected <= found
    assert all(k.startswith('between_layer3.') for k in found - expected)


@pytest.mark.parametrize(
    'name', ['toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py',
             'toy/fcn_r18-d8-nl_toy-cityscapes.py',
             'toy/mask-rcnn_regnet-nl-c4_fpn_toy-coco.py'])
def test_toy_models_train_from_scratch(name):
    model_cfg = load(name).model.to_dict()
    assert without_pretrained(model_cfg) == model_cfg
    model = build_model(name)
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 128, 256))
    assert len(feats) == 4


@pytest.mark.parametrize('ratio', ['r16', 'r4'])
def test_x101_gc_matches_mmdets_zoo_config(ratio):
    """Same modules and state-dict keys as mmdet's own config, so the zoo
    checkpoint loads; the blocks are ours."""
    import mmdet
    from mmdet.registry import MODELS as DET_MODELS
    row = f'mask-rcnn_x101-32x4d-syncbn-gcb-{ratio}-c3-c5_fpn_1x_coco.py'
    ours = build_model(f'mmdet/{row}').backbone
    zoo = Config.fromfile(
        osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'gcnet',
                 row)).model.backbone
    zoo.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        zoo = DET_MODELS.build(zoo)
    assert type(ours) is type(zoo) and type(ours).__name__ == 'ResNeXt'
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in zoo.state_dict().items()}
    blocks = [m for m in ours.modules() if isinstance(m, ContextBlock)]
    width = {'r16': 16, 'r4': 4}[ratio]
    assert len(blocks) == 30
    assert all(b.planes == b.in_channels // width for b in blocks)
    assert isinstance(ours.norm1, nn.SyncBatchNorm) and not ours.norm_eval


def test_x101_nl_wraps_resnext_and_keeps_its_keys():
    name = 'mmdet/mask-rcnn_x101-32x4d-syncbn-nl-c4_fpn_1x_coco.py'
    backbone = build_model(name).backbone
    plain = build_model(
        'mmdet/mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py').backbone
    assert type(backbone) is type(plain) and backbone.groups == 32
    keys, plain_keys = set(backbone.state_dict()), set(plain.state_dict())
    assert plain_keys <= keys
    assert all(k.startswith('between_layer3.after21_nonlocal_block.')
               for k in keys - plain_keys)
    block = backbone.between_layer3['after21_nonlocal_block']
    assert (block.in_channels, block.inter_channels) == (1024, 512)
    assert isinstance(backbone.norm1, nn.SyncBatchNorm)
    inner = load(name).model.backbone.backbone
    assert inner.init_cfg.checkpoint == 'open-mmlab://resnext101_32x4d'
