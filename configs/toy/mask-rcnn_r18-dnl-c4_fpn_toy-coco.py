# Toy Mask R-CNN with one DNL block: the toy baseline
# (mask-rcnn_r18_fpn_toy-coco.py) plus a disentangled non-local block
# (whitened pairwise + unary term, temperature 0.05) right before the last
# residual block of res4 (ResNetNL `between_blocks`, after=(-2, ) of
# stage 3), the placement of the NL toy config.
# Published: none (toy data).
_base_ = ['./mask-rcnn_r18_fpn_toy-coco.py', '../_base_/plugins/dnl-c4.py']
model = dict(backbone=dict(between_blocks={{_base_.dnl_c4}}))
