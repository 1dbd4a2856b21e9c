# Diagnostics of the toy ablation (toy-coco_two-tasks.py), not part of it:
# on the matching task one NL block at c4 did not beat the baseline in the
# common 12-epoch schedule. These rows ask why, one change each:
# - 36 epochs: is it the length of training?
# - NL at c3 (after residual block 0 of res3, stride 8, 12 x 32 positions
#   instead of 6 x 16): is it the resolution at which shapes must match?
# - GC r4 for 36 epochs: the query-independent control for the first.
#   python tools/ablate.py configs/ablations/toy-coco_matching-diagnostics.py \
#       --jobs 2 --plot
title = 'Toy COCO matching task: diagnostics of the NL row'
scale = 100.
metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
input_shape = (96, 256)

_matching = '../toy/mask-rcnn_r18_fpn_toy-coco-matching.py'
_nl = dict(type='nonlocal_plugin.NonLocal2D', reduction=2,
           mode='embedded_gaussian')
_gc = dict(type='nonlocal_plugin.ContextBlock', ratio=1. / 4,
           pooling_type='att', fusion_types=('channel_add', ))


def _at(block, stages):
    return dict(between_blocks=[dict(cfg=block, stages=stages,
                                     after=(-2, ))])


_c3 = (False, True, False, False)
_c4 = (False, False, True, False)
# The base schedule stretched 3x: warm-up, then steps at 3/4 and 11/12.
_36_epochs = dict(
    train_cfg=dict(max_epochs=36, val_interval=36),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
             end=50),
        dict(type='MultiStepLR', begin=0, end=36, by_epoch=True,
             milestones=[27, 33], gamma=0.1)
    ])
rows = [
    dict(name='matching-nl-eg-36ep', config=_matching,
         overrides=dict(model=dict(backbone=_at(_nl, _c4)), **_36_epochs),
         published=None, note='toy data; 3x schedule'),
    dict(name='matching-nl-eg-c3', config=_matching,
         overrides=dict(model=dict(backbone=_at(_nl, _c3))),
         published=None, note='toy data; NL at c3'),
    dict(name='matching-gc-r4-36ep', config=_matching,
         overrides=dict(model=dict(backbone=_at(_gc, _c4)), **_36_epochs),
         published=None, note='toy data; 3x schedule'),
]
