# Toy baseline on a backbone other than ResNet: the toy Mask R-CNN
# (mask-rcnn_r18_fpn_toy-coco.py: data, heads, schedule) with a small mmdet
# RegNet instead of ResNet-18 at 1/4 width. Its generator parameters give
# stage widths 16, 32, 64, 128 (those of the toy ResNet-18) and depths 1, 2,
# 4, 1, with group width 8 and bottleneck ratio 1; trained from scratch.
# Compare with mask-rcnn_regnet-nl-c4_fpn_toy-coco.py.
# Published: none (toy data).
_base_ = ['./mask-rcnn_r18_fpn_toy-coco.py']
toy_regnet = dict(
    type='mmdet.RegNet',
    arch=dict(w0=16, wa=12.0, wm=2.0, group_w=8, depth=8, bot_mul=1.0),
    stem_channels=16,
    base_channels=16,
    out_indices=(0, 1, 2, 3),
    frozen_stages=-1,
    norm_eval=False,
    init_cfg=None)
model = dict(backbone=dict(_delete_=True, **toy_regnet))
