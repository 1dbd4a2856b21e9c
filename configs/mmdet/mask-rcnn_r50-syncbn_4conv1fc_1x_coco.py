# Baseline of the DNL paper's detection table: Mask R-CNN R50-FPN 1x with
# SyncBN in the backbone, the FPN and both heads, and a 4conv1fc box head,
# as the official code (github.com/Howal/DNL-Object-Detection, configs/
# dnlnet/mask_rcnn_r50_fpn_syncabn_4conv1fc_1x_4nodes.py; it used
# in-place-ABN's SyncABN, a memory-saving SyncBN, 64 images per batch with
# lr 0.08, here 16 with lr 0.02, and gradient clipping at 35).
#
# Published: box AP 38.8, mask AP 35.1 (row "R50-FPN, SyncBN, 4Conv1FC, -"
#   of the official code's README, which lists the models of the paper's
#   COCO table; the paper's table itself was not checked here).
_base_ = './mask-rcnn_r50_fpn_1x_coco.py'
syncbn = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=syncbn, norm_eval=False),
    neck=dict(norm_cfg=syncbn),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=syncbn),
        mask_head=dict(norm_cfg=syncbn)))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
