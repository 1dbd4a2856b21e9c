# The NL(c4) row of the DNL paper's detection table, as its official code
# configures it (github.com/Howal/DNL-Object-Detection, configs/dnlnet/
# mask_rcnn_r50_nl_eg_c4_fpn_syncabn_4conv1fc_1x_4nodes.py): one
# embedded-gaussian block with inner width C / 4 after residual block -2 of
# res4. For ResNetNL's `between_blocks`.
nl_r4_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.NonLocal2D',
            reduction=4,
            use_scale=True,
            mode='embedded_gaussian'),
        stages=(False, False, True, False),
        after=(-2, ))
]
