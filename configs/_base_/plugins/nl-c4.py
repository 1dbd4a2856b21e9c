# NL paper (arXiv 1711.07971), COCO setting: one embedded-gaussian block
# (inner width C / 2, logits scaled by 1 / sqrt(C / 2)) right before the
# last residual block of res4 (layer3), i.e. after the residual add of its
# last-but-one block. For ResNetNL / ResNetV1cNL's `between_blocks`.
nl_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.NonLocal2D',
            reduction=2,
            use_scale=True,
            mode='embedded_gaussian'),
        stages=(False, False, True, False),
        after=(-2, ))
]
