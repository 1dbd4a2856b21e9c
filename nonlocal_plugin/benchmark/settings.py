"""The benchmark's grid, sizes, peers and targets."""
from __future__ import annotations

from typing import Dict, Tuple

Shape = Tuple[int, int, int]  # (C, H, W)

# Shapes of the default grid, by name. res4 and res3 are the C4 and C3 maps
# of an 800x1333 image (strides 16 and 8).
GRID: Dict[str, Shape] = {
    'small': (256, 32, 32),
    'n4096': (512, 64, 64),
    'res4': (1024, 50, 84),
    'res3': (512, 100, 168),
}
QUICK_GRID: Dict[str, Shape] = {'quick': (64, 32, 32)}
NL_MODES = ('gaussian', 'embedded_gaussian', 'dot_product', 'concatenation')
DNL_MODE = 'embedded_gaussian'
DNL_TEMPERATURE = 0.05
BLOCKS = ('nl', 'dnl')
# --amp: the autocast dtypes of the block and model rows (by torch name).
AMP_DTYPES = ('fp16', 'bf16')
PEERS = {
    'nl': "mmcv's NonLocal2d",
    'dnl': "mmseg's DisentangledNonLocal2d",
}

# The rate rows: torch.mm size, and the attention of res3 (N = 100 * 168
# positions, head dim 512 // 2).
MM_SIZE = 4096
RES3_ATTENTION = (100 * 168, 256)
QUICK_MM_SIZE = 512
QUICK_ATTENTION = (1024, 64)
BACKWARD_FLOP_FACTOR = 2.5  # backward FLOPs / forward FLOPs

MASK_RCNN_CONFIG = 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
IMAGE_SIZE = (800, 1216)  # an 800x1333-style COCO image, padded to 32
# One NL block after the last-but-one residual block of res4 (layer3).
NL_PLACEMENT = dict(stages=(False, False, True, False), after=(-2, ))
MODEL_BLOCK = {'ours': 'nonlocal_plugin.NonLocal2D', 'peer': 'NonLocal2d'}

GB = 1e9
MB = 1e6
DEFAULT_MEM_CAP_GB = 12.0
DEFAULT_TIMEOUT_S = 3600.0
PRELOAD = ('torch', 'nonlocal_plugin', 'mmseg.models.decode_heads.dnl_head')

# The checks of tools/benchmark.py, evaluated by :func:`check_targets`.
TARGETS = (
    'embedded_gaussian at res3: <= 0.15x the peak extra memory and <= 0.8x '
    "the time of mmcv's NonLocal2d",
    "dot_product at res3: >= 10x faster than mmcv's NonLocal2d",
    'concatenation at N=4096, C=512: completes within 1 GB extra '
    "(mmcv's NonLocal2d cannot)",
    'fused softmax attention at res3 (N=16800, d=256, forward): >= 90% of '
    'the fp32 torch.mm rate (4096x4096)',
    'every block row (each block, mode and size): <= 1.0x the time and the '
    'peak extra memory of its peer',
    'Mask R-CNN R50-FPN train step with one NL block: <= 1.0x the time of '
    "the same model with mmcv's block",
)
