# Mask R-CNN X101-32x4d-FPN 1x, SyncBN backbone, + 1 NL block: the NL
# paper's COCO placement (one embedded-gaussian block right before the last
# residual block of res4, here after block 21 of ResNeXt-101's 23) on the
# backbone of mmdet's ResNeXt GC rows, so that it compares with them.
# mmdet's ResNeXt is wrapped by nonlocal_plugin.InsertBlocks; its weights
# (open-mmlab://resnext101_32x4d) load unchanged and the block is
# `between_layer3.after21_nonlocal_block`.
#
# Published: none for NL on ResNeXt-101. The NL paper (arXiv 1711.07971)
#   reports +1 NL with Mask R-CNN on R50, R101 and X152, not X101 (its
#   X152 numbers are not quoted here: not verified against the paper).
#   Rows to compare with, same recipe (mmdet zoo,
#   mmdet/.mim/configs/gcnet/metafile.yml):
#   baseline mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco 42.4 / 37.7, GC r16
#   43.5 / 38.6, GC r4 43.9 / 39.0 (box / mask AP).
_base_ = [
    './mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/insert-nl-c4.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='nonlocal_plugin.InsertBlocks',
        backbone={{_base_.model.backbone}},
        blocks={{_base_.insert_nl_c4}}))
