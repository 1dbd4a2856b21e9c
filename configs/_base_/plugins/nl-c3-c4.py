# Variant of the NL paper's COCO setting with blocks in res3 and res4: one
# embedded-gaussian block right before the last residual block of each.
# For ResNetNL / ResNetV1cNL's `between_blocks`.
nl_c3_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.NonLocal2D',
            reduction=2,
            use_scale=True,
            mode='embedded_gaussian'),
        stages=(False, True, True, False),
        after=(-2, ))
]
