# NL (arXiv 1711.07971): the COCO rows of Table 5 (Mask R-CNN R50, 1x) and
# the ablations of Table 2 (pairwise function, stage, number of blocks),
# which the paper ran on Kinetics with C2D ResNet-50, applied here to the
# COCO Mask R-CNN R50-FPN 1x of ../mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py.
#
# Numbers: +1 NL 39.0 / 35.5 (box / mask AP), read from the paper's results
# as paperswithcode lists them (paperswithcode.com/paper/non-local-neural-
# networks, "Mask R-CNN (ResNet-50 + 1 NL)", COCO minival). The baseline row
# of Table 5 was not read here: "not verified" (mmdet's zoo baseline is
# 38.2 / 34.7). Table 2 reports Kinetics top-1 / top-5 accuracy, not AP, so
# its rows have no published number.
#
# Placement, as the official code places it (github.com/facebookresearch/
# video-nonlocal-net, lib/models/resnet_helper.py, res_stage_nonlocal): a
# block follows the whole residual block, after its final ReLU, when
# `idx % nonlocal_mod == nonlocal_mod - 1`; that is ResNetNL's
# `between_blocks`. One block: "right before the last residual block" of a
# stage, after=(-2, ). 5 blocks: LAYER_MOD = 2 (lib/core/config.py), blocks
# 1, 3 of res3 and 1, 3, 5 of res4. 10 blocks: every residual block of res3
# (4) and res4 (6), what LAYER_MOD = 1 gives; no released script sets it.
# The block: embedded gaussian, inner width C / 2 (`int(dim_in / 2)`),
# logits scaled by 1 / sqrt(C / 2).
_nl_c4 = '../mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py'
_table2 = 'NL paper (arXiv 1711.07971) Table 2{} reports Kinetics accuracy'
_res = {
    'res2': (True, False, False, False),
    'res3': (False, True, False, False),
    'res4': (False, False, True, False),
    'res5': (False, False, False, True),
}


def _nl(mode='embedded_gaussian', **options):
    return dict(
        type='nonlocal_plugin.NonLocal2D',
        mode=mode,
        reduction=2,
        use_scale=True,
        **options)


def _between(*entries):
    """ResNetNL's between_blocks: (block cfg, stage name, after) each."""
    return dict(
        model=dict(
            backbone=dict(between_blocks=[
                dict(cfg=cfg, stages=_res[stage], after=after)
                for cfg, stage, after in entries
            ])))


title = ('NL (arXiv 1711.07971): Table 5 (COCO) and the Table 2 ablations, '
         'on COCO Mask R-CNN R50-FPN 1x')
scale = 100.
metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
rows = [
    # Table 5
    dict(
        name='baseline',
        group='Table 5',
        config='../mmdet/mask-rcnn_r50_fpn_1x_coco.py',
        published=dict(
            source='NL paper (arXiv 1711.07971) Table 5, R50 baseline',
            verified=False),
        note='mmdet zoo, same config: 38.2 / 34.7'),
    dict(
        name='nl-c4',
        group='Table 5',
        config=_nl_c4,
        published=dict(
            bbox_AP=39.0,
            mask_AP=35.5,
            source='NL paper (arXiv 1711.07971) Table 5, R50 +1 NL, as '
            'listed on paperswithcode.com/paper/non-local-neural-networks'),
        note='also the default of Table 2 (a)-(c): embedded gaussian, 1 '
        'block, res4'),
    # Table 2(a), pairwise function, 1 block in res4; embedded gaussian is
    # 'nl-c4'
    dict(
        name='gaussian',
        group='Table 2(a) pairwise function',
        config=_nl_c4,
        overrides=_between((_nl(mode='gaussian'), 'res4', (-2, ))),
        published=None,
        note=_table2.format('(a)')),
    dict(
        name='dot-product',
        group='Table 2(a) pairwise function',
        config=_nl_c4,
        overrides=_between((_nl(mode='dot_product'), 'res4', (-2, ))),
        published=None,
        note=_table2.format('(a)')),
    dict(
        name='concatenation',
        group='Table 2(a) pairwise function',
        config=_nl_c4,
        overrides=_between((_nl(mode='concatenation'), 'res4', (-2, ))),
        published=None,
        note=_table2.format('(a)')),
    # Table 2(b), stage, 1 block before the stage's last residual block; res4
    # is 'nl-c4'
    dict(
        name='res2',
        group='Table 2(b) stage',
        config=_nl_c4,
        overrides=_between((_nl(), 'res2', (-2, ))),
        published=None,
        note=_table2.format('(b)')),
    dict(
        name='res3',
        group='Table 2(b) stage',
        config=_nl_c4,
        overrides=_between((_nl(), 'res3', (-2, ))),
        published=None,
        note=_table2.format('(b)')),
    dict(
        name='res5',
        group='Table 2(b) stage',
        config=_nl_c4,
        overrides=_between((_nl(), 'res5', (-2, ))),
        published=None,
        note=_table2.format('(b)')),
    # Table 2(c), number of blocks; 1 block is 'nl-c4'
    dict(
        name='5-blocks',
        group='Table 2(c) blocks',
        config=_nl_c4,
        overrides=_between((_nl(), 'res3', (1, 3)),
                           (_nl(), 'res4', (1, 3, 5))),
        published=None,
        note=_table2.format('(c)')),
    dict(
        name='10-blocks',
        group='Table 2(c) blocks',
        config=_nl_c4,
        overrides=_between((_nl(), 'res3', (0, 1, 2, 3)),
                           (_nl(), 'res4', (0, 1, 2, 3, 4, 5))),
        published=None,
        note=_table2.format('(c)')),
    # Sub-sampling (Sec. 3.3: max pooling after phi and g); the official
    # video code has it on by default (NONLOCAL.USE_MAXPOOL = True), the
    # paper has no table row for it; without it is 'nl-c4'
    dict(
        name='sub-sample',
        group='sub-sampling',
        config=_nl_c4,
        overrides=_between((_nl(sub_sample=True), 'res4', (-2, ))),
        published=None,
        note='no published row: the paper describes the trick, no table '
        'ablates it'),
]
