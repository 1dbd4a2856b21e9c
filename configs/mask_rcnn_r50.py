# Mask R-CNN R50-FPN 1x on COCO, the baseline; short name of
# mmdet/mask-rcnn_r50_fpn_1x_coco.py (read its header).
# Published: box AP 38.2, mask AP 34.7 (mmdet model zoo).
_base_ = './mmdet/mask-rcnn_r50_fpn_1x_coco.py'
