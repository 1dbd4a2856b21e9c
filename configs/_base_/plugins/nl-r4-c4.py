# The NL(c4) row of the DNL paper's detection table, as its official code
# configures it (github.com/Howal/DNL-Object-Detection, configs/dnlnet/
# mask_rcnn_r50_nl_eg_c4_fpn_syncabn_4conv1fc_1x_4nodes.py: nlb with
# reduction 4, logits scaled by 1 / sqrt(C / 4), stage_with_nlb=[[], [],
# [-2], []]): one embedded-gaussian block inside residual block -2 of res4,
# after its residual add and before its final ReLU. For ResNetNL's
# `plugins` (position='after_add').
nl_r4_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.NonLocal2D',
            reduction=4,
            use_scale=True,
            mode='embedded_gaussian'),
        stages=(False, False, True, False),
        position='after_add',
        blocks=(-2, ))
]
