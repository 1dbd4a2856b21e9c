# One DNL block right before the last residual block of res4, with the
# settings of mmseg's DNLHead on Cityscapes (inner width C / 2,
# temperature 0.05). For ResNetNL / ResNetV1cNL's `between_blocks`.
dnl_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.DisentangledNonLocal',
            reduction=2,
            temperature=0.05,
            mode='embedded_gaussian'),
        stages=(False, False, True, False),
        after=(-2, ))
]
