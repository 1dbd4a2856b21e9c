# FCN R50-D8 on Cityscapes 512x1024, 40k iterations, with one NL block
# right before the last residual block of res4; short name of
# mmseg/fcn_r50-d8-nl_4xb2-40k_cityscapes-512x1024.py (read its header).
# Published: none for this model; FCN baseline mIoU 72.25 and mmseg's
#   NLHead 78.24 are the reference rows (mmseg model zoo).
_base_ = './mmseg/fcn_r50-d8-nl_4xb2-40k_cityscapes-512x1024.py'
