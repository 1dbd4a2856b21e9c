"""What changes between the 1-D, 2-D and 3-D versions of a block."""
from typing import NamedTuple

from torch import nn


class DimSpec(NamedTuple):
    conv: str  # mmcv conv type for ``conv_cfg``
    layout: str  # the input layout, for messages
    subsample: type  # the key/value sub-sampling pool
    subsample_kernel: tuple  # pools space only, never time


DIMS = {
    1: DimSpec('Conv1d', 'N, C, L', nn.MaxPool1d, (2, )),
    2: DimSpec('Conv2d', 'N, C, H, W', nn.MaxPool2d, (2, 2)),
    3: DimSpec('Conv3d', 'N, C, T, H, W', nn.MaxPool3d, (1, 2, 2)),
}


def subsample_pool(dim: int) -> nn.Module:
    """The 2x max pool that the non-local paper applies to keys and values."""
    spec = DIMS[dim]
    return spec.subsample(kernel_size=spec.subsample_kernel)
