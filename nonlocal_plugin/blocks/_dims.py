"""What changes between the 1-D, 2-D and 3-D versions of a block."""
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _single


class MaxPool1dAs2d(nn.MaxPool1d):
    """``nn.MaxPool1d`` computed as a 2-D pool over ``[N, C, L, 1]``.

    The same outputs; ``torch.export`` (and so the dynamo ONNX exporter)
    freezes the length of a 1-D pool's input at the traced size, which
    the 2-D pool leaves symbolic.
    """

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride, padding, dilation = (
            _single(v)[0] for v in (self.kernel_size, self.stride
                                    or self.kernel_size, self.padding,
                                    self.dilation))
        if self.return_indices:
            return super().forward(x)
        out = F.max_pool2d(x.unsqueeze(-1), (kernel, 1), (stride, 1),
                           (padding, 0), (dilation, 1), self.ceil_mode)
        return out.squeeze(-1)


class DimSpec(NamedTuple):
    conv: str  # mmcv conv type for ``conv_cfg``
    layout: str  # the input layout, for messages
    subsample: type  # the key/value sub-sampling pool
    subsample_kernel: tuple  # pools space only, never time


DIMS = {
    1: DimSpec('Conv1d', 'N, C, L', MaxPool1dAs2d, (2, )),
    2: DimSpec('Conv2d', 'N, C, H, W', nn.MaxPool2d, (2, 2)),
    3: DimSpec('Conv3d', 'N, C, T, H, W', nn.MaxPool3d, (1, 2, 2)),
}


def subsample_pool(dim: int) -> nn.Module:
    """The 2x max pool that the non-local paper applies to keys and values."""
    spec = DIMS[dim]
    return spec.subsample(kernel_size=spec.subsample_kernel)
