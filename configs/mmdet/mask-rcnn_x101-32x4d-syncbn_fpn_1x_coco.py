# Baseline of mmdet's GCNet table on ResNeXt-101 32x4d: Mask R-CNN X101-FPN
# 1x with SyncBN in the backbone (norm_eval=False), as mmdet's
# configs/gcnet/mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py.
#
# Published: box AP 42.4, mask AP 37.7 (mmdet model zoo,
#   mmdet/.mim/configs/gcnet/metafile.yml,
#   mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco).
# SyncBN needs a GPU for each process; in one process (or on CPU) the
# tools train it as BN.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_x101-32x4d_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False))
