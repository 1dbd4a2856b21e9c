# GCNet (arXiv 1904.11492) with ratio 1/4, as mmdet's gcnet r4 configs:
# after conv3 of every bottleneck in c3-c5. For ResNet's `plugins`.
gcb_r4_c3_c5 = [
    dict(
        cfg=dict(type='nonlocal_plugin.ContextBlock', ratio=1. / 4),
        stages=(False, True, True, True),
        position='after_conv3')
]
