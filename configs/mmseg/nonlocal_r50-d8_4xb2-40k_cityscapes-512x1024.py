# Reference row: mmseg's NLHead (one NL block in the decode head of an
# R50-D8 FCN-style model), Cityscapes 512x1024, 40k; mmseg's
# configs/nonlocal_net/nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024.py.
#
# Published: mIoU 78.24 (mmseg model zoo, configs/nonlocal_net/
#   metafile.yaml, nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024).
_base_ = 'mmseg::nonlocal_net/nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024.py'
