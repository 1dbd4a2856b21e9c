# The NL(c4) row of the DNL paper's detection table: the DNL-table baseline
# (SyncBN everywhere, 4conv1fc head) plus one embedded-gaussian NL block
# with inner width C / 4 inside residual block -2 of res4, after its residual
# add and before its final ReLU, as the official code places it
# (position='after_add').
#
# Published: box AP 39.6, mask AP 35.8 (row "NL(c4)" of the README of the
#   DNL paper's official code, github.com/Howal/DNL-Object-Detection; the
#   paper's table itself was not checked here). Baseline 38.8 / 35.1.
_base_ = [
    './mask-rcnn_r50-syncbn_4conv1fc_1x_coco.py',
    '../_base_/nonlocal_plugin.py', '../_base_/plugins/nl-r4-c4.py'
]
model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetNL', plugins={{_base_.nl_r4_c4}}))
