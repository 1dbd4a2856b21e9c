# NL paper (arXiv 1711.07971), COCO setting, for nonlocal_plugin.InsertBlocks
# (any backbone whose res4 is `layer3`): one embedded-gaussian block (inner
# width C / 2, logits scaled by 1 / sqrt(C / 2)) right before the last
# residual block of res4. Its key is `between_layer3.after{n-2}_
# nonlocal_block`, as with ResNetNL's `between_blocks` fragment nl-c4.py.
insert_nl_c4 = [
    dict(
        cfg=dict(
            type='nonlocal_plugin.NonLocal2D',
            reduction=2,
            use_scale=True,
            mode='embedded_gaussian'),
        before='layer3.-1')
]
