# Baseline: Mask R-CNN, ResNet-50 + FPN, 1x schedule (12 epochs), COCO 2017,
# backbone initialised from torchvision's ImageNet ResNet-50.
#
# Published: box AP 38.2, mask AP 34.7 (mmdet model zoo,
#   configs/mask_rcnn/metafile.yml, mask-rcnn_r50_fpn_1x_coco).
# NL paper (arXiv 1711.07971, Table 5), its Detectron R50 baseline row:
#   box AP 38.0, mask AP 34.6 (see mask-rcnn_r50-nl-c4_fpn_1x_coco.py).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
