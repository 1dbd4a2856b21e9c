# Reference row: mmseg's DNLHead (a DNL block in the decode head of an
# R50-D8 model), Cityscapes 512x1024, 40k; mmseg's
# configs/dnlnet/dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py.
#
# Published: mIoU 78.61 (mmseg model zoo, configs/dnlnet/metafile.yaml,
#   dnl_r50-d8_4xb2-40k_cityscapes-512x1024).
_base_ = 'mmseg::dnlnet/dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py'
