# Mask R-CNN X101-32x4d-FPN 1x + GC blocks, ratio 1/4, after conv3 (and its
# norm) of every bottleneck in c3-c5, SyncBN backbone: mmdet's
# configs/gcnet/mask-rcnn_x101-32x4d-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py
# with this package's ContextBlock (mmcv's keys and outputs).
#
# Published (the row this config reproduces): mmdet's model zoo,
#   mmdet/.mim/configs/gcnet/metafile.yml,
#   mask-rcnn_x101-32x4d-syncbn-gcb-r4-c3-c5_fpn_1x_coco: box AP 43.9,
#   mask AP 39.0
#   (SyncBN baseline 42.4 / 37.7, mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco).
# The blocks go in through ResNeXt's own `plugins` (inside each
# bottleneck, before the residual add), so the keys are the zoo
# checkpoint's (layer2.0.context_block....). nonlocal_plugin.InsertBlocks
# puts a block at the same place with after='layer[234].*.bn3'.
_base_ = [
    './mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/gcb-r4-c3-c5.py'
]
model = dict(backbone=dict(plugins={{_base_.gcb_r4_c3_c5}}))
