# Reference row: mmseg's DNLHead (a DNL block in the decode head of an
# R50-D8 model), Cityscapes 512x1024, 80k; mmseg's
# configs/dnlnet/dnl_r50-d8_4xb2-80k_cityscapes-512x1024.py.
#
# Published: mIoU 79.33 (mmseg model zoo, configs/dnlnet/metafile.yaml,
#   dnl_r50-d8_4xb2-80k_cityscapes-512x1024).
_base_ = 'mmseg::dnlnet/dnl_r50-d8_4xb2-80k_cityscapes-512x1024.py'
