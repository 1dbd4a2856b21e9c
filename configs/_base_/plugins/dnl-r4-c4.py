# The DNL(c4) row of the DNL paper's detection table, as its official code
# configures it (github.com/Howal/DNL-Object-Detection, configs/dnlnet/
# mask_rcnn_r50_r4_nlgcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py: nlgcb with
# ratio 1/4, temperature 0.05, channel whitening, the unary term, no output
# conv, stage_with_nlgcb=[[], [], [-2], []]): the official block
# (DisentangledNonLocalDet2D) inside residual block -2 of res4, after its
# residual add and before its final ReLU. For ResNetNL's `plugins`
# (position='after_add').
dnl_r4_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.DisentangledNonLocalDet2D',
            reduction=4,
            temperature=0.05,
            whitening='channel'),
        stages=(False, False, True, False),
        position='after_add',
        blocks=(-2, ))
]
