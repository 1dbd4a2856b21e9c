# The DNL(c4) row of the DNL paper's detection table, as its official code
# configures it (github.com/Howal/DNL-Object-Detection, configs/dnlnet/
# mask_rcnn_r50_r4_nlgcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py: ratio 1/4,
# temperature 0.05, channel whitening, unary term): one block after
# residual block -2 of res4. For ResNetNL's `between_blocks`.
dnl_r4_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.DisentangledNonLocal',
            reduction=4,
            temperature=0.05,
            mode='embedded_gaussian'),
        stages=(False, False, True, False),
        after=(-2, ))
]
