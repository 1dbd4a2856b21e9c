# FCN R50-D8 on Cityscapes 512x1024, 40k iterations, the baseline; short
# name of mmseg/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py.
# Published: mIoU 72.25 (mmseg model zoo).
_base_ = './mmseg/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
