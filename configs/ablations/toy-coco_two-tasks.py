# The toy ablation of the README: the blocks of the NL, GCNet and DNL
# ablations on two toy COCO tasks, Mask R-CNN R18 (1/4 width) + FPN, 12
# epochs from scratch on CPU.
#
# - cue: every object's class is the colour of one bar along the far edge
#   (nonlocal_plugin/datasets/toy.py). One global context serves every
#   object: a query-independent block (GC, SNL) has what it needs.
# - matching: every object's class is the colour of the legend marker with
#   the object's shape (nonlocal_plugin/datasets/toy_matching.py). Objects
#   of one image need different context: the GCNet paper's argument
#   (arXiv 1904.11492) that NL's maps are nearly query-independent, and the
#   DNL paper's answer (arXiv 2006.06668), put to a test.
#
# Every block sits at one place, c4: after residual block -2 of res4
# (`between_blocks`, as the NL paper's COCO block), so the block is the only
# difference between rows. Run:
#   python tools/ablate.py configs/ablations/toy-coco_two-tasks.py \
#       --seeds 0 1 --jobs 2 --plot
title = ('Toy COCO, two tasks: Mask R-CNN R18/4-FPN, 12 epochs, one block '
         'at c4')
scale = 100.
metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
input_shape = (96, 256)

_tasks = dict(
    cue='../toy/mask-rcnn_r18_fpn_toy-coco.py',
    matching='../toy/mask-rcnn_r18_fpn_toy-coco-matching.py')
_dnl = dict(type='nonlocal_plugin.DisentangledNonLocalDet2D', reduction=4)
# name -> the block at c4 (None: the baseline)
_blocks = {
    'baseline': None,
    'nl-eg': dict(type='nonlocal_plugin.NonLocal2D', reduction=2,
                  mode='embedded_gaussian'),
    'nl-dot': dict(type='nonlocal_plugin.NonLocal2D', reduction=2,
                   mode='dot_product'),
    'gc-r4': dict(type='nonlocal_plugin.ContextBlock', ratio=1. / 4,
                  pooling_type='att', fusion_types=('channel_add', )),
    'snl': dict(type='nonlocal_plugin.SimplifiedNonLocal2D'),
    'dnl': _dnl,
    'dnl-pairwise': dict(_dnl, use_unary=False),
    'dnl-unary': dict(_dnl, use_pairwise=False),
}
rows = [
    dict(
        name=f'{task}-{name}',
        group=task,
        config=config,
        overrides={} if block is None else dict(
            model=dict(backbone=dict(between_blocks=[
                dict(cfg=block, stages=(False, False, True, False),
                     after=(-2, ))
            ]))),
        published=None,
        note='toy data') for task, config in _tasks.items()
    for name, block in _blocks.items()
]
