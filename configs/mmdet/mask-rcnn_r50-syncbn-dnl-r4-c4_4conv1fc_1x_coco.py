# DNL as in the DNL paper's detection table: the DNL-table baseline (SyncBN
# in backbone, FPN and heads, 4conv1fc box head) plus one disentangled
# non-local block after residual block -2 of res4 (inner width C / 4,
# temperature 0.05, whitened pairwise + unary terms).
#
# Published (the row this config reproduces): "Disentangled Non-Local Neural
#   Networks" (arXiv 2006.06668), COCO Mask R-CNN R50-FPN, row "DNL(c4)": box
#   AP 40.3, mask AP 36.4, as listed in the README of the official code
#   (github.com/Howal/DNL-Object-Detection), which holds the paper's detection
#   models; the paper's table itself was not checked here. Same table: baseline
#   38.8 / 35.1, NL(c4) 39.6 / 35.8, GC(c4, r4) 40.1 / 36.2, DNL(c4 + all of
#   c5) 41.2 / 37.2.
# Differences from the official block: it has no output conv (its value
# conv keeps all C channels and a zero-initialised scalar gates the
# output), and it sits before the residual block's final ReLU. This
# package's block reduces the value to C / 4 and uses a zero-initialised
# output conv, after the ReLU.
_base_ = [
    './mask-rcnn_r50-syncbn_4conv1fc_1x_coco.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/dnl-r4-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetNL',
        between_blocks={{_base_.dnl_r4_c4}}))
