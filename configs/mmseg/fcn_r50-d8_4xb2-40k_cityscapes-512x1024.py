# Baseline: FCN, ResNet-50-D8 (ResNetV1c, dilated res4/res5), Cityscapes
# 512x1024 crops, 40k iterations, 4 GPUs x 2 images, SyncBN;
# mmseg's configs/fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py.
#
# Published: mIoU 72.25 (73.36 multi-scale + flip), mmseg's model zoo,
#   configs/fcn/metafile.yaml, fcn_r50-d8_4xb2-40k_cityscapes-512x1024.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
