# Baseline of mmdet's GCNet table: Mask R-CNN R50-FPN 1x with SyncBN in the
# backbone (norm_eval=False), as mmdet's
# configs/gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py.
#
# Published: box AP 38.4, mask AP 34.6 (mmdet, configs/gcnet/metafile.yml,
#   mask-rcnn_r50_fpn_syncbn-backbone_1x_coco).
# SyncBN needs a GPU for each process; in one process (or on CPU) the
# tools train it as BN.
_base_ = './mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False))
