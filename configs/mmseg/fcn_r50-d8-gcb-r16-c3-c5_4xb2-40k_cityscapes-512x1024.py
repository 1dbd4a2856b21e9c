# FCN R50-D8 (40k, Cityscapes 512x1024) with GC blocks in the backbone as
# GCNet places them for detection (mmdet's gcnet configs): ratio 1/16,
# after conv3 of every bottleneck in c3-c5 (ResNetV1c `plugins`).
#
# Published: none for GC blocks inside an FCN backbone on Cityscapes.
#   Reference rows (mmseg model zoo, metafile.yaml of each method,
#   *_r50-d8_4xb2-40k_cityscapes-512x1024): FCN baseline mIoU 72.25;
#   mmseg's GCHead (a GC block in the decode head, gcnet) 77.69.
_base_ = [
    './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/gcb-r16-c3-c5.py'
]
model = dict(backbone=dict(plugins={{_base_.gcb_r16_c3_c5}}))
