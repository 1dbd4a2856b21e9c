# Toy Mask R-CNN with one NL block: the toy baseline
# (mask-rcnn_r18_fpn_toy-coco.py) plus the NL paper's COCO placement, one
# embedded-gaussian block right before the last residual block of res4
# (ResNetNL `between_blocks`, after=(-2, ) of stage 3; 8x8 positions here).
# The block sees the cue bar from every object, which is what the toy
# labels depend on.
# Published: none (toy data).
_base_ = ['./mask-rcnn_r18_fpn_toy-coco.py', '../_base_/plugins/nl-c4.py']
model = dict(backbone=dict(between_blocks={{_base_.nl_c4}}))
