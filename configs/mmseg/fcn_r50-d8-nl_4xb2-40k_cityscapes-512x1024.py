# FCN R50-D8 (40k, Cityscapes 512x1024) with one embedded-gaussian NL block
# in the backbone, placed as the NL paper places its single block: right
# before the last residual block of res4 (ResNetV1cNL `between_blocks`,
# after=(-2, ) of stage 3; 64x128 positions at the 512x1024 crop).
#
# Published: none for an NL block inside an FCN backbone on Cityscapes.
#   Reference rows (mmseg model zoo, metafile.yaml of each method,
#   *_r50-d8_4xb2-40k_cityscapes-512x1024): FCN baseline mIoU 72.25;
#   mmseg's NLHead (an NL block in the decode head, nonlocal_net) 78.24.
_base_ = [
    './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/nl-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetV1cNL', between_blocks={{_base_.nl_c4}}))
