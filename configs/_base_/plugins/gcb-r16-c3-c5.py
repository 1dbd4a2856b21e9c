# GCNet (arXiv 1904.11492) as mmdet's gcnet configs place it: a GC block
# with ratio 1/16 after conv3 of every bottleneck in c3-c5. For ResNet's
# `plugins`.
gcb_r16_c3_c5 = [
    dict(
        cfg=dict(type='nonlocal_plugin.ContextBlock', ratio=1. / 16),
        stages=(False, True, True, True),
        position='after_conv3')
]
