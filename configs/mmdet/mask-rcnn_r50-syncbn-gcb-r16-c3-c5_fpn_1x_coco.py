# Mask R-CNN R50-FPN 1x + GC blocks, ratio 1/16, after conv3 of every
# bottleneck in c3-c5, with SyncBN in the backbone: mmdet's
# configs/gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py, with this
# package's ContextBlock (same keys and outputs as mmcv's).
#
# Published (the row this config reproduces): GCNet (arXiv 1904.11492)
#   as mmdet's model zoo reports it, configs/gcnet/metafile.yml,
#   mask-rcnn_r50_fpn_syncbn-backbone_r16_gcb_c3-c5_1x_coco: box AP 40.4,
#   mask AP 36.2 (SyncBN baseline 38.4 / 34.6). The GCNet paper's own COCO
#   table was not checked here.
_base_ = [
    './mask-rcnn_r50-syncbn_fpn_1x_coco.py', '../_base_/nonlocal_plugin.py',
    '../_base_/plugins/gcb-r16-c3-c5.py'
]
model = dict(backbone=dict(plugins={{_base_.gcb_r16_c3_c5}}))
