# DNL (arXiv 2006.06668), COCO detection: every row of the official detection
# code's README (github.com/Howal/DNL-Object-Detection README.md, "Results on
# R50-FPN with backbone (syncBN)": Mask R-CNN R50-FPN 1x, SyncBN, 4conv1fc
# box head, COCO 2017 val), which lists the models of the paper's COCO
# table. The numbers are read from that README; the paper's table itself was
# not read. Base: ../mmdet/mask-rcnn_r50-syncbn_4conv1fc_1x_coco.py.
#
# Each row's structure is read from the official config named above it and
# from mmdet/models/backbones/resnet.py of that repository: a block given by
# `stage_with_<block>=[[], [], [-2], []]` lives inside residual block -2 of
# res4 (block 4 of 6) and runs after the residual add, before that block's
# final ReLU (Bottleneck.forward: `out += identity`, then context_block /
# nl_gc_block / nonlocal_block, then `self.relu(out)`). That is
# position='after_add' here. The README's notes say "inserted after 1x1
# conv" and "c4's last residual block"; the code says after the add, block
# -2.
#
# Group 'options': the block options that `nl_gc_block.py` implements and no
# official config or README row uses (whitening none/bn, learned
# temperature, mean unary, pairwise-only, unary-only), each as DNL(c4) with
# one option changed. They have no published number.
_base = '../mmdet/mask-rcnn_r50-syncbn_4conv1fc_1x_coco.py'
_readme = ('github.com/Howal/DNL-Object-Detection README.md, Results on '
           'R50-FPN with backbone (syncBN), Mask, SyncBN, 4Conv1FC, 1x, ')
_c4 = (False, False, True, False)
_c5 = (False, False, False, True)
# The official block (mmdet/ops/nl_gc_block.py, NonLocal2dGc) as the DNL
# configs set it: nlgcb=dict(ratio=1/4, downsample=False,
# whiten_type=['channel'], temp=0.05, with_gc=True, use_out=False,
# out_bn=False).
_dnl = dict(
    type='nonlocal_plugin.DisentangledNonLocalDet2D',
    reduction=4,
    temperature=0.05,
    learn_temperature=False,
    whitening='channel',
    use_pairwise=True,
    use_unary=True,
    unary_type='conv',
    sub_sample=False)


def _after_add(*entries):
    """ResNetNL with blocks after the residual add of chosen bottlenecks.

    Each entry is (block cfg, stages, residual-block indices or None).
    """
    plugins = []
    for cfg, stages, blocks in entries:
        plugin = dict(cfg=cfg, stages=stages, position='after_add')
        if blocks is not None:
            plugin['blocks'] = blocks
        plugins.append(plugin)
    return dict(
        custom_imports=dict(
            imports=['nonlocal_plugin', 'nonlocal_plugin.backbones'],
            allow_failed_imports=False),
        model=dict(
            backbone=dict(type='nonlocal_plugin.ResNetNL', plugins=plugins)))


title = ('DNL (arXiv 2006.06668), COCO Mask R-CNN R50-FPN 1x, SyncBN, '
         '4conv1fc: the official detection README')
scale = 100.
metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
rows = [
    # configs/dnlnet/mask_rcnn_r50_fpn_syncabn_4conv1fc_1x_4nodes.py: no
    # block.
    dict(
        name='baseline',
        config=_base,
        published=dict(bbox_AP=38.8, mask_AP=35.1, source=_readme + '"-"')),
    # configs/dnlnet/mask_rcnn_r50_nl_eg_c4_fpn_syncabn_4conv1fc_1x_4nodes.py:
    # nlb=dict(mode='embedded_gaussian', reduction=4, fixbug=True),
    # stage_with_nlb=[[], [], [-2], []]; fixbug divides the logits by
    # sqrt(C / 4) (use_scale).
    dict(
        name='nl-c4',
        config=_base,
        overrides=_after_add((dict(
            type='nonlocal_plugin.NonLocal2D',
            mode='embedded_gaussian',
            reduction=4,
            use_scale=True), _c4, (-2, ))),
        published=dict(bbox_AP=39.6, mask_AP=35.8, source=_readme + 'NL(c4)')),
    # configs/dnlnet/mask_rcnn_r50_r4_gcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py:
    # gcb=dict(ratio=1/4), stage_with_gcb=[[], [], [-2], []]; the block of
    # mmdet/ops/context_block.py: att pooling, add fusion, LN + ReLU.
    dict(
        name='gc-c4-r4',
        config=_base,
        overrides=_after_add((dict(
            type='nonlocal_plugin.ContextBlock',
            ratio=1. / 4,
            pooling_type='att',
            fusion_types=('channel_add', )), _c4, (-2, ))),
        published=dict(
            bbox_AP=40.1, mask_AP=36.2, source=_readme + 'GC(c4, r4)')),
    # configs/dnlnet/mask_rcnn_r50_r4_gcb-sym_c4_fpn_syncabn_4conv1fc_1x.py:
    # gcb=dict(ratio=1/4, simple=True), stage_with_gcb=[[], [], [-2], []];
    # simple=True is SNL: a C x C value conv (the ratio is unused), softmax
    # mask, add; the value conv has no bias and a N(0, 0.01) init.
    dict(
        name='snl-c4',
        config=_base,
        overrides=_after_add((dict(
            type='nonlocal_plugin.SimplifiedNonLocal2D', bias=False,
            std=0.01), _c4, (-2, ))),
        published=dict(bbox_AP=40.1, mask_AP=36.2,
                       source=_readme + 'SNL(c4)')),
    # configs/dnlnet/
    # mask_rcnn_r50_r4_nlgcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py: nlgcb as
    # in _dnl, stage_with_nlgcb=[[], [], [-2], []].
    dict(
        name='dnl-c4',
        config=_base,
        overrides=_after_add((_dnl, _c4, (-2, ))),
        published=dict(
            bbox_AP=40.3, mask_AP=36.4, source=_readme + 'DNL(c4)')),
    # configs/dnlnet/mask_rcnn_r50_r4_nlgcb_c4c5_fpn_syncabn_4conv1fc_1x.py:
    # stage_with_nlgcb=[[], [], [-2], [-2, -1, 0]]: block 4 of res4 and all
    # 3 blocks of res5.
    dict(
        name='dnl-c4-c5all',
        config=_base,
        overrides=_after_add((_dnl, _c4, (-2, )), (_dnl, _c5, None)),
        published=dict(
            bbox_AP=41.2, mask_AP=37.2, source=_readme + 'DNL(c4+c5_all)')),
]
_options = {
    'whiten-none': dict(whitening='none'),
    'whiten-bn': dict(whitening='bn'),
    'learn-temperature': dict(learn_temperature=True),
    'unary-mean': dict(unary_type='mean'),
    'pairwise-only': dict(use_unary=False),
    'unary-only': dict(use_pairwise=False),
}
rows += [
    dict(
        name=f'dnl-c4-{name}',
        group='options',
        config=_base,
        overrides=_after_add((dict(_dnl, **option), _c4, (-2, ))),
        published=None,
        note='no official config or number: DNL(c4) with ' + ', '.join(
            f'{k}={v!r}' for k, v in option.items()))
    for name, option in _options.items()
]
