# Variant: Mask R-CNN R50-FPN 1x with two NL blocks, one right before the
# last residual block of res3 and one of res4 (ResNetNL `between_blocks`,
# after=(-2, ) of stages 2 and 3).
#
# Published: none for this placement on COCO. The NL paper's COCO table
#   (arXiv 1711.07971, Table 5) only has the single res4 block (R50 +1 NL:
#   box AP 39.0, mask AP 35.5); compare with that and with the baseline
#   (mmdet: 38.2 / 34.7).
_base_ = [
    './mask-rcnn_r50_fpn_1x_coco.py', '../_base_/nonlocal_plugin.py',
    '../_base_/plugins/nl-c3-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetNL',
        between_blocks={{_base_.nl_c3_c4}}))
