# FCN R50-D8 (40k, Cityscapes 512x1024) with one DNL block in the backbone,
# right before the last residual block of res4 (ResNetV1cNL
# `between_blocks`), with the settings of mmseg's DNLHead (inner width
# C / 2, temperature 0.05).
#
# Published: none for a DNL block inside an FCN backbone on Cityscapes.
#   Reference rows (mmseg model zoo, metafile.yaml of each method,
#   *_r50-d8_4xb2-40k_cityscapes-512x1024): FCN baseline mIoU 72.25;
#   mmseg's DNLHead (a DNL block in the decode head, dnlnet) 78.61.
_base_ = [
    './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/dnl-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetV1cNL', between_blocks={{_base_.dnl_c4}}))
