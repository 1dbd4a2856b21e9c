# Mask R-CNN R50-FPN 1x + 1 NL block right before the last residual block
# of res4, the NL paper's COCO setting; short name of
# mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py (read its header).
# Published: box AP 39.0, mask AP 35.5 (arXiv 1711.07971, Table 5,
#   R50 +1 NL).
_base_ = './mmdet/mask-rcnn_r50-nl-c4_fpn_1x_coco.py'
