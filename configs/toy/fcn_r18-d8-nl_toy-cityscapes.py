# Toy FCN with one NL block: the toy baseline (fcn_r18-d8_toy-cityscapes.py)
# plus one embedded-gaussian NL block right before the last residual block
# of res4 (ResNetV1cNL `between_blocks`, after=(-2, ) of stage 3; 16x32
# positions here), which sees the cue bar from every blob.
# Published: none (toy data).
_base_ = ['./fcn_r18-d8_toy-cityscapes.py', '../_base_/plugins/nl-c4.py']
model = dict(backbone=dict(between_blocks={{_base_.nl_c4}}))
