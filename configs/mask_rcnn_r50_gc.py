# Mask R-CNN R50-FPN 1x + GC blocks (r16, c3-c5, after conv3, SyncBN
# backbone), as mmdet's gcnet configs; short name of
# mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py (read its header).
# Published: box AP 40.4, mask AP 36.2 (mmdet model zoo, gcnet).
_base_ = './mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
