# Reference row: mmseg's GCHead (a GC block in the decode head of an R50-D8
# model), Cityscapes 512x1024, 40k; mmseg's
# configs/gcnet/gcnet_r50-d8_4xb2-40k_cityscapes-512x1024.py.
#
# Published: mIoU 77.69 (mmseg model zoo, configs/gcnet/metafile.yaml,
#   gcnet_r50-d8_4xb2-40k_cityscapes-512x1024).
_base_ = 'mmseg::gcnet/gcnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
