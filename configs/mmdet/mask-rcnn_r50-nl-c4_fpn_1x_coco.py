# Mask R-CNN R50-FPN 1x + 1 NL block: the NL paper's COCO setting. One
# embedded-gaussian non-local block in res4, right before its last residual
# block (ResNetNL `between_blocks`, after=(-2, ) of stage 3).
#
# Published (the row this config reproduces): "Non-local Neural
#   Networks" (arXiv 1711.07971), Table 5, Mask R-CNN R50 on COCO,
#   "+1 NL": box AP 39.0 (AP50 61.1, AP75 41.9), mask AP 35.5; the
#   paper's R50 baseline row: 38.0 / 34.6. mmdet's baseline: 38.2 / 34.7.
# The paper trained with Detectron (frozen BN); this config keeps mmdet's
# 1x recipe and torchvision's ResNet-50 weights. The block starts as the
# identity (zero-initialised output conv), so the weights load unchanged.
_base_ = [
    './mask-rcnn_r50_fpn_1x_coco.py', '../_base_/nonlocal_plugin.py',
    '../_base_/plugins/nl-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetNL', between_blocks={{_base_.nl_c4}}))
