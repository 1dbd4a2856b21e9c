# Variant: GC blocks with ratio 1/4 (c3-c5, after conv3, SyncBN backbone),
# as mmdet's configs/gcnet/mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py.
#
# Published (the row this config reproduces): mmdet's model zoo,
#   configs/gcnet/metafile.yml,
#   mask-rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco: box AP 40.7,
#   mask AP 36.5 (SyncBN baseline 38.4 / 34.6).
_base_ = [
    './mask-rcnn_r50-syncbn_fpn_1x_coco.py', '../_base_/nonlocal_plugin.py',
    '../_base_/plugins/gcb-r4-c3-c5.py'
]
model = dict(backbone=dict(plugins={{_base_.gcb_r4_c3_c5}}))
