"""Every row of the paper grids in ``configs/ablations/`` builds a model with
the blocks that the paper row describes, where it describes them.

The expected structure of each row is written out below as data, from the
papers and their official code (see each grid file's comments), not derived
from the grid: which block classes the backbone holds, in which residual
block, at which position and with which options. The position is checked
twice: by where the module sits (a plugin of the residual block, an
``'after_add'`` block of it, or a ``between_layerN`` block) and by a forward
pass that compares each block's input with the tensors of its residual
block. Models are built, never initialised or trained.
"""
from __future__ import annotations

import os.path as osp
from functools import lru_cache
from typing import Dict, List, NamedTuple

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from torch import nn

import nonlocal_plugin  # noqa: F401  registers the blocks
import nonlocal_plugin.backbones  # noqa: F401  registers ResNetNL
from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    DisentangledNonLocalDet2D,
    NonLocal2D,
)
from nonlocal_plugin.ablation.grid import load_grid, row_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GRID_DIR = osp.join(ROOT, 'configs', 'ablations')
GRIDS = ('gcnet_table2', 'dnl_detection', 'nl_table')
BLOCK_TYPES = (NonLocal2D, ContextBlock, DisentangledNonLocal,
               DisentangledNonLocalDet2D)
# Output channels of ResNet-50's stages.
WIDTH = {'layer1': 256, 'layer2': 512, 'layer3': 1024, 'layer4': 2048}


class Site(NamedTuple):
    """One block: module path in the backbone, class, position, options."""
    path: str
    cls: str
    position: str  # 'after_conv3' | 'after_add' | 'between'
    options: Dict


# helper functions


def inside(name: str, cls: str, position: str, options: Dict,
           **blocks) -> List[Site]:
    """Blocks inside residual blocks: ``layer3=(4, )`` is ``layer3.4``."""
    return [
        Site(f'{stage}.{i}.{name}', cls, position, options)
        for stage, indices in blocks.items() for i in indices
    ]


def between(name: str, options: Dict, **blocks) -> List[Site]:
    """NL blocks after whole residual blocks (``between_blocks``)."""
    return [
        Site(f'between_{stage}.after{i}_{name}', 'NonLocal2D', 'between',
             options) for stage, indices in blocks.items() for i in indices
    ]


# expectations

C3_C5 = dict(layer2=range(4), layer3=range(6), layer4=range(3))


def gc(ratio=1 / 16, pooling='att', fusion=('channel_add', ), ln=True,
       relu=True):
    return dict(ratio=ratio, pooling_type=pooling, fusion_types=fusion,
                use_layer_norm=ln, use_relu=relu)


SNL = dict(ratio=None, pooling_type='att', fusion_types=('channel_add', ),
           use_layer_norm=False, use_relu=False)


def nl(mode='embedded_gaussian', reduction=2, sub_sample=False):
    return dict(mode=mode, reduction=reduction, use_scale=True,
                sub_sample=sub_sample)


# The official DNL detection block as its configs set it (ratio 1/4,
# temperature 0.05, channel whitening, unary term, no sub-sampling).
DNL = dict(reduction=4, temperature=0.05, learn_temperature=False,
           whitening='channel', use_pairwise=True, use_unary=True,
           unary_type='conv', sub_sample=False)


def dnl_c4(**changes):
    return inside('dnl_det_block', 'DisentangledNonLocalDet2D', 'after_add',
                  dict(DNL, **changes), layer3=(4, ))


def gc_c3_c5(position='after_conv3', **options):
    return inside('context_block', 'ContextBlock', position, gc(**options),
                  **C3_C5)


EXPECTED = {
    # GCNet Table 2: blocks inside every bottleneck of the chosen stages,
    # after conv3 (official GCNet); single blocks and "after add" after the
    # residual add of block 4 of res4 (R50's res4 has 6 blocks).
    'gcnet_table2': {
        'baseline': [],
        'nl-c4': inside('nonlocal_block', 'NonLocal2D', 'after_add', nl(),
                        layer3=(4, )),
        'snl-c4': inside('snl_block', 'SimplifiedNonLocal2D', 'after_add',
                         SNL, layer3=(4, )),
        'gc-c4': inside('context_block', 'ContextBlock', 'after_add', gc(),
                        layer3=(4, )),
        'all-gc': gc_c3_c5(),
        'after-add': gc_c3_c5('after_add'),
        'stage-c3': inside('context_block', 'ContextBlock', 'after_conv3',
                           gc(), layer2=range(4)),
        'stage-c4': inside('context_block', 'ContextBlock', 'after_conv3',
                           gc(), layer3=range(6)),
        'stage-c5': inside('context_block', 'ContextBlock', 'after_conv3',
                           gc(), layer4=range(3)),
        'design-wo-ratio': gc_c3_c5(ratio=None, ln=False, relu=False),
        'design-r16': gc_c3_c5(ln=False, relu=False),
        'design-r16-relu': gc_c3_c5(ln=False),
        'ratio-r32': gc_c3_c5(ratio=1 / 32),
        'ratio-r8': gc_c3_c5(ratio=1 / 8),
        'ratio-r4': gc_c3_c5(ratio=1 / 4),
        'avg-scale': gc_c3_c5(pooling='avg', fusion=('channel_mul', )),
        'avg-add': gc_c3_c5(pooling='avg'),
        'att-scale': gc_c3_c5(fusion=('channel_mul', )),
    },
    # DNL official detection code: stage_with_*=[[], [], [-2], []] is block
    # 4 of res4, after the residual add, before the ReLU; c5_all is
    # [-2, -1, 0] of res5's 3 blocks.
    'dnl_detection': {
        'baseline': [],
        'nl-c4': inside('nonlocal_block', 'NonLocal2D', 'after_add',
                        nl(reduction=4), layer3=(4, )),
        'gc-c4-r4': inside('context_block', 'ContextBlock', 'after_add',
                           gc(ratio=1 / 4), layer3=(4, )),
        'snl-c4': inside('snl_block', 'SimplifiedNonLocal2D', 'after_add',
                         dict(SNL, bias=False, std=0.01), layer3=(4, )),
        'dnl-c4': inside('dnl_det_block', 'DisentangledNonLocalDet2D',
                         'after_add', DNL, layer3=(4, )),
        'dnl-c4-c5all': inside('dnl_det_block', 'DisentangledNonLocalDet2D',
                               'after_add', DNL, layer3=(4, ),
                               layer4=(0, 1, 2)),
        # the block options no official config uses, one at a time
        'dnl-c4-whiten-none': dnl_c4(whitening='none'),
        'dnl-c4-whiten-bn': dnl_c4(whitening='bn'),
        'dnl-c4-learn-temperature': dnl_c4(learn_temperature=True),
        'dnl-c4-unary-mean': dnl_c4(unary_type='mean'),
        'dnl-c4-pairwise-only': dnl_c4(use_unary=False),
        'dnl-c4-unary-only': dnl_c4(use_pairwise=False),
    },
    # NL: blocks after whole residual blocks (after their ReLU). One block:
    # before the last residual block of the stage (res2: 3 blocks, res3: 4,
    # res4: 6, res5: 3); 5 blocks: 1, 3 of res3 and 1, 3, 5 of res4; 10:
    # every block of res3 and res4.
    'nl_table': {
        'baseline': [],
        'nl-c4': between('nonlocal_block', nl(), layer3=(4, )),
        'gaussian': between('nonlocal_block', nl('gaussian'), layer3=(4, )),
        'dot-product': between('nonlocal_block', nl('dot_product'),
                               layer3=(4, )),
        'concatenation': between('nonlocal_block', nl('concatenation'),
                                 layer3=(4, )),
        'res2': between('nonlocal_block', nl(), layer1=(1, )),
        'res3': between('nonlocal_block', nl(), layer2=(2, )),
        'res5': between('nonlocal_block', nl(), layer4=(1, )),
        '5-blocks': between('nonlocal_block', nl(), layer2=(1, 3),
                            layer3=(1, 3, 5)),
        '10-blocks': between('nonlocal_block', nl(), layer2=range(4),
                             layer3=range(6)),
        'sub-sample': between('nonlocal_block', nl(sub_sample=True),
                              layer3=(4, )),
    },
}

# The rest of each model: backbone norm and box head of the paper's setting.
SETTING = {
    'gcnet_table2': ('SyncBatchNorm', 'Shared2FCBBoxHead'),
    'dnl_detection': ('SyncBatchNorm', 'Shared4Conv1FCBBoxHead'),
    'nl_table': ('BatchNorm2d', 'Shared2FCBBoxHead'),
}

# Numbers read from a source: (box AP, mask AP) and a part of the source.
GCNET_README = 'github.com/xvjiarui/GCNet README.md'
DNL_README = 'github.com/Howal/DNL-Object-Detection README.md'
PUBLISHED = {
    'gcnet_table2': {
        'baseline': (37.2, 33.8, GCNET_README),
        'all-gc': (39.4, 35.7, GCNET_README),
        'ratio-r4': (39.9, 36.2, GCNET_README),
    },
    'dnl_detection': {
        'baseline': (38.8, 35.1, DNL_README),
        'nl-c4': (39.6, 35.8, DNL_README),
        'gc-c4-r4': (40.1, 36.2, DNL_README),
        'snl-c4': (40.1, 36.2, DNL_README),
        'dnl-c4': (40.3, 36.4, DNL_README),
        'dnl-c4-c5all': (41.2, 37.2, DNL_README),
    },
    'nl_table': {
        'nl-c4': (39.0, 35.5,
                  'paperswithcode.com/paper/non-local-neural-networks'),
    },
}
# Rows without a COCO number: NL's Table 2 is Kinetics; the DNL options
# have no official config.
NO_NUMBER = {
    'dnl_detection': {
        f'dnl-c4-{name}' for name in ('whiten-none', 'whiten-bn',
                                      'learn-temperature', 'unary-mean',
                                      'pairwise-only', 'unary-only')
    },
    'nl_table': {
        'gaussian', 'dot-product', 'concatenation', 'res2', 'res3', 'res5',
        '5-blocks', '10-blocks', 'sub-sample'
    },
}

CASES = [(grid, row) for grid in GRIDS for row in EXPECTED[grid]]


@lru_cache(maxsize=None)
def grid(name: str):
    return load_grid(osp.join(GRID_DIR, f'{name}.py'))


@lru_cache(maxsize=None)
def build(grid_name: str, row: str) -> nn.Module:
    from mmdet.registry import MODELS
    cfg = row_config(grid(grid_name).row(row))
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(ConfigDict(cfg.model.to_dict()))


def block_paths(backbone: nn.Module) -> Dict[str, nn.Module]:
    return {
        path: module
        for path, module in backbone.named_modules()
        if isinstance(module, BLOCK_TYPES)
    }


def residual_block(backbone: nn.Module, path: str) -> nn.Module:
    """The residual block a site belongs to (or follows, for 'between')."""
    head, tail = path.split('.')[:2]
    if head.startswith('between_'):
        index = int(tail[len('after'):tail.index('_')])
        return getattr(backbone, head[len('between_'):])[index]
    return getattr(backbone, head)[int(tail)]


def structural_position(backbone: nn.Module, path: str) -> str:
    """Where the module sits: which list of its residual block names it."""
    if path.startswith('between_'):
        return 'between'
    block, name = residual_block(backbone, path), path.split('.')[-1]
    if name in getattr(block, 'after_add_names', ()):
        return 'after_add'
    for position in ('after_conv1', 'after_conv2', 'after_conv3'):
        if name in getattr(block, f'{position}_plugin_names', ()):
            return position
    return 'unknown'


def measured_positions(backbone: nn.Module,
                       paths: List[str]) -> Dict[str, str]:
    """Each block's position, from what its input equals in a forward pass.

    ``after_conv3``: norm3's output; ``after_add``: norm3's output plus the
    shortcut; ``between``: the residual block's output (after its ReLU).
    """
    seen, handles = {}, []

    def keep(key, tensor):
        seen[key] = tensor.detach().clone()

    for path in paths:
        block = residual_block(backbone, path)
        module = backbone.get_submodule(path)
        handles += [
            module.register_forward_pre_hook(
                lambda m, args, p=path: keep(('in', p), args[0])),
            block.register_forward_pre_hook(
                lambda m, args, p=path: keep(('x', p), args[0])),
            block.norm3.register_forward_hook(
                lambda m, args, out, p=path: keep(('norm3', p), out)),
            block.register_forward_hook(
                lambda m, args, out, p=path: keep(('out', p), out)),
        ]
        if block.downsample is not None:
            handles.append(
                block.downsample.register_forward_hook(
                    lambda m, args, out, p=path: keep(('shortcut', p), out)))
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.randn(1, 3, 64, 96))
    finally:
        for handle in handles:
            handle.remove()

    positions = {}
    for path in paths:
        given = seen[('in', path)]
        shortcut = seen.get(('shortcut', path), seen[('x', path)])
        candidates = {
            'after_conv3': seen[('norm3', path)],
            'after_add': seen[('norm3', path)] + shortcut,
            'between': seen[('out', path)],
        }
        matches = [
            name for name, tensor in candidates.items()
            if tensor.shape == given.shape
            and torch.allclose(tensor, given, atol=1e-5)
        ]
        positions[path] = matches[0] if len(matches) == 1 else str(matches)
    return positions


# tests


def test_every_row_has_expectations():
    for name in GRIDS:
        assert [r.name for r in grid(name).rows] == list(EXPECTED[name])


@pytest.mark.parametrize('grid_name,row', CASES)
def test_row_builds_with_the_papers_blocks(grid_name, row):
    model = build(grid_name, row)
    backbone = model.backbone
    expected = {site.path: site for site in EXPECTED[grid_name][row]}
    found = block_paths(backbone)
    assert sorted((p, type(m).__name__) for p, m in found.items()) == sorted(
        (site.path, site.cls) for site in expected.values())
    for path, site in expected.items():
        block = found[path]
        stage = path.split('.')[0].replace('between_', '')
        assert block.in_channels == WIDTH[stage], path
        options = {key: getattr(block, key) for key in site.options}
        assert options == site.options, path
        assert structural_position(backbone, path) == site.position, path


@pytest.mark.parametrize('grid_name,row', [
    case for case in CASES if EXPECTED[case[0]][case[1]]
])
def test_blocks_run_at_the_papers_position(grid_name, row):
    backbone = build(grid_name, row).backbone
    sites = EXPECTED[grid_name][row]
    measured = measured_positions(backbone, [site.path for site in sites])
    assert measured == {site.path: site.position for site in sites}


@pytest.mark.parametrize('grid_name', GRIDS)
def test_rest_of_the_model_is_the_papers_setting(grid_name):
    norm, bbox_head = SETTING[grid_name]
    for row in grid(grid_name).rows:
        model = build(grid_name, row.name)
        assert type(model.backbone.norm1).__name__ == norm, row.name
        assert type(model.roi_head.bbox_head).__name__ == bbox_head, row.name


@pytest.mark.parametrize('grid_name,row', CASES)
def test_published_numbers_only_where_read(grid_name, row):
    entry = grid(grid_name).row(row)
    published = entry.published
    if row in NO_NUMBER.get(grid_name, ()):
        assert published is None
        assert entry.note, 'say why there is no number'
        return
    assert published is not None and published['source'].strip()
    columns = set(grid(grid_name).metrics)
    numbers = {k: v for k, v in published.items() if k in columns}
    if row in PUBLISHED[grid_name]:
        box, mask, source = PUBLISHED[grid_name][row]
        assert published.get('verified', True) is True
        assert numbers == dict(bbox_AP=box, mask_AP=mask)
        assert source in published['source']
        assert entry.verified
    else:
        assert published.get('verified') is False
        assert numbers == {}
        assert not entry.verified


def test_grids_measure_coco_ap_in_percent():
    for name in GRIDS:
        assert grid(name).scale == 100.
        assert grid(name).metrics == dict(
            bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
