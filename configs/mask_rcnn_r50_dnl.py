# Mask R-CNN R50-FPN 1x + 1 DNL block in res4, as in the DNL paper's
# detection table (SyncBN, 4conv1fc head); short name of
# mmdet/mask-rcnn_r50-syncbn-dnl-r4-c4_4conv1fc_1x_coco.py (read
# its header).
# Published: box AP 40.3, mask AP 36.4 (DNL(c4) row, README of the DNL
#   paper's official detection code).
_base_ = './mmdet/mask-rcnn_r50-syncbn-dnl-r4-c4_4conv1fc_1x_coco.py'
