# Toy Mask R-CNN with GC blocks: the toy baseline
# (mask-rcnn_r18_fpn_toy-coco.py) plus a GC block (ratio 1/4) after conv2
# of every basic block in c3-c5, the BasicBlock counterpart of mmdet's
# gcnet placement (after conv3 of every bottleneck), which ResNetNL allows.
# Its global attention pooling sees the cue bar that sets the labels.
# Published: none (toy data).
_base_ = ['./mask-rcnn_r18_fpn_toy-coco.py']
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='nonlocal_plugin.ContextBlock', ratio=1. / 4),
            stages=(False, True, True, True),
            position='after_conv2')
    ]))
