# GCNet (arXiv 1904.11492) Table 2: ablations of the GC block on COCO 2017
# val, Mask R-CNN R50-FPN 1x with SyncBN in the backbone (2fc box head), as
# the official code trains it (github.com/xvjiarui/GCNet, configs/gcnet/r50/
# backbone_syncbn/). Base: ../mmdet/mask-rcnn_r50-syncbn_fpn_1x_coco.py.
#
# Numbers: the paper's table could not be read here (no stored copy of the
# paper reaches Table 2), so only the rows whose model the official README
# also lists carry numbers, read from that README (github.com/xvjiarui/GCNet
# README.md, "Results on R50-FPN with backbone (syncBN)", Mask, 2fc (w/o
# BN), 1x): baseline 37.2 / 33.8, GC(c3-c5, r16) 39.4 / 35.7, GC(c3-c5, r4)
# 39.9 / 36.2. Every other row is "not verified". The row list and the
# sub-table names follow the paper's text as recalled, not as read.
#
# The default GC model (r16, LayerNorm + ReLU, attention pooling, add
# fusion, after conv3 ("after 1x1") of every bottleneck of c3-c5) is the
# row 'all-gc'; the paper repeats it in each sub-table, this grid lists it
# once.
#
# Placement. Official GCNet code (mmdet/models/backbones/resnet.py of
# xvjiarui/GCNet): the block runs on the output of conv3 + norm3, before
# the residual add: mmdet's position='after_conv3'. "After add" and the
# single blocks of "+1 NL/SNL/GC" ("right before the last residual block of
# c4": after residual block -2 of res4) use position='after_add' (after the
# residual add, before the block's final ReLU), where the authors' later
# detection code (github.com/Howal/DNL-Object-Detection, resnet.py) applies
# its NL, GC and SNL blocks.
_base = '../mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
_baseline = '../mmdet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'
_readme = ('github.com/xvjiarui/GCNet README.md, Results on R50-FPN with '
           'backbone (syncBN), Mask, 2fc (w/o BN), 1x, ')
_paper = 'GCNet paper (arXiv 1904.11492) Table 2, '
_c3_c5 = (False, True, True, True)
_c4 = (False, False, True, False)
_snl = dict(type='nonlocal_plugin.SimplifiedNonLocal2D')


def _gc(**options):
    return dict(type='nonlocal_plugin.ContextBlock', **options)


def _after_conv3(cfg, stages=_c3_c5):
    """Every bottleneck of the selected stages, after conv3 (GCNet)."""
    return dict(
        model=dict(
            backbone=dict(
                plugins=[
                    dict(cfg=cfg, stages=stages, position='after_conv3')
                ])))


def _after_add(cfg, stages=_c4, blocks=(-2, )):
    """After the residual add of the selected bottlenecks, before ReLU."""
    entry = dict(cfg=cfg, stages=stages, position='after_add')
    if blocks is not None:
        entry['blocks'] = blocks
    return dict(
        model=dict(
            backbone=dict(type='nonlocal_plugin.ResNetNL', plugins=[entry])))


title = ('GCNet (arXiv 1904.11492) Table 2: GC block ablations, COCO Mask '
         'R-CNN R50-FPN 1x, SyncBN backbone')
scale = 100.
metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
rows = [
    # block design
    dict(
        name='baseline',
        group='block design',
        config=_baseline,
        published=dict(bbox_AP=37.2, mask_AP=33.8, source=_readme + '"-"')),
    dict(
        name='nl-c4',
        group='block design',
        config=_base,
        overrides=_after_add(
            dict(type='nonlocal_plugin.NonLocal2D',
                 mode='embedded_gaussian',
                 reduction=2)),
        published=dict(source=_paper + '+1 NL', verified=False),
        note='NL paper block (inner width C/2), after residual block 4 of '
        'res4; the width of GCNet\'s NL block was not read'),
    dict(
        name='snl-c4',
        group='block design',
        config=_base,
        overrides=_after_add(_snl),
        published=dict(source=_paper + '+1 SNL', verified=False)),
    dict(
        name='gc-c4',
        group='block design',
        config=_base,
        overrides=_after_add(_gc(ratio=1. / 16)),
        published=dict(source=_paper + '+1 GC', verified=False)),
    dict(
        name='all-gc',
        group='block design',
        config=_base,
        published=dict(
            bbox_AP=39.4, mask_AP=35.7, source=_readme + 'GC(c3-c5, r16)'),
        note='the default of every sub-table: r16, LN+ReLU, att+add, after '
        '1x1, c3-c5'),
    # position; after 1x1 is 'all-gc'
    dict(
        name='after-add',
        group='position',
        config=_base,
        overrides=_after_add(_gc(ratio=1. / 16), stages=_c3_c5, blocks=None),
        published=dict(source=_paper + 'after add', verified=False),
        note='every bottleneck of c3-c5, after the add, before the ReLU'),
    # stage; c3-c5 ("all") is 'all-gc'
    dict(
        name='stage-c3',
        group='stage',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16), stages=(False, True, False, False)),
        published=dict(source=_paper + 'c3', verified=False)),
    dict(
        name='stage-c4',
        group='stage',
        config=_base,
        overrides=_after_conv3(_gc(ratio=1. / 16), stages=_c4),
        published=dict(source=_paper + 'c4', verified=False)),
    dict(
        name='stage-c5',
        group='stage',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16), stages=(False, False, False, True)),
        published=dict(source=_paper + 'c5', verified=False)),
    # bottleneck design; r16+LN+ReLU is 'all-gc'
    dict(
        name='design-wo-ratio',
        group='bottleneck design',
        config=_base,
        overrides=_after_conv3(_gc(ratio=None)),
        published=dict(source=_paper + 'w/o ratio', verified=False),
        note='one C x C conv, no bottleneck (SNL\'s transform)'),
    dict(
        name='design-r16',
        group='bottleneck design',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16, use_layer_norm=False, use_relu=False)),
        published=dict(source=_paper + 'r16', verified=False),
        note='two convs, neither LayerNorm nor ReLU between them'),
    dict(
        name='design-r16-relu',
        group='bottleneck design',
        config=_base,
        overrides=_after_conv3(_gc(ratio=1. / 16, use_layer_norm=False)),
        published=dict(source=_paper + 'r16+ReLU', verified=False)),
    # bottleneck ratio (LayerNorm + ReLU); r16 is 'all-gc'
    dict(
        name='ratio-r32',
        group='bottleneck ratio',
        config=_base,
        overrides=_after_conv3(_gc(ratio=1. / 32)),
        published=dict(source=_paper + 'r32', verified=False)),
    dict(
        name='ratio-r8',
        group='bottleneck ratio',
        config=_base,
        overrides=_after_conv3(_gc(ratio=1. / 8)),
        published=dict(source=_paper + 'r8', verified=False)),
    dict(
        name='ratio-r4',
        group='bottleneck ratio',
        config='../mmdet/mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py',
        published=dict(
            bbox_AP=39.9, mask_AP=36.2, source=_readme + 'GC(c3-c5, r4)')),
    # pooling and fusion ("scale" is channel_mul: x * sigmoid(t)); att+add is
    # 'all-gc'
    dict(
        name='avg-scale',
        group='pooling and fusion',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16, pooling_type='avg',
                fusion_types=('channel_mul', ))),
        published=dict(source=_paper + 'avg+scale', verified=False)),
    dict(
        name='avg-add',
        group='pooling and fusion',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16, pooling_type='avg',
                fusion_types=('channel_add', ))),
        published=dict(source=_paper + 'avg+add', verified=False)),
    dict(
        name='att-scale',
        group='pooling and fusion',
        config=_base,
        overrides=_after_conv3(
            _gc(ratio=1. / 16, pooling_type='att',
                fusion_types=('channel_mul', ))),
        published=dict(source=_paper + 'att+scale', verified=False)),
]
