# Toy Mask R-CNN whose backbone is not a ResNet, with one NL block put in by
# nonlocal_plugin.InsertBlocks: the toy RegNet baseline
# (mask-rcnn_regnet_fpn_toy-coco.py) plus the NL paper's COCO placement,
# one embedded-gaussian block right before the last residual block of res4
# (before='layer3.-1': after block 2 of RegNet's 4 in layer3; 6x16
# positions here). The block sees the cue bar from every object, which is
# what the toy labels depend on.
# Published: none (toy data).
_base_ = [
    './mask-rcnn_regnet_fpn_toy-coco.py',
    '../_base_/plugins/insert-nl-c4.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='nonlocal_plugin.InsertBlocks',
        backbone={{_base_.toy_regnet}},
        blocks={{_base_.insert_nl_c4}}))
