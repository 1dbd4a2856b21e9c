"""Global context block (GCNet, Cao et al., 2019).

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
Beyond", https://arxiv.org/abs/1904.11492.
Consulted: mmcv's ``mmcv/cnn/bricks/context_block.py``, whose module names
(``conv_mask``, ``channel_add_conv``, ``channel_mul_conv``) this block keeps,
so mmdet's GCNet checkpoints load and give the same outputs.

Two things differ from mmcv, neither touching its weights' behaviour:

* ``'channel_gate'``, an extra multiplicative fusion ``x * 2 sigmoid(t)``
  whose last conv starts at zero, so it is the identity at init. mmcv's
  ``'channel_mul'`` (``x * sigmoid(t)``) halves the features at init; it is
  kept unchanged so that mmcv weights still give mmcv's outputs.
* The bottleneck width ``int(in_channels * ratio)`` is at least 1.
"""
from typing import Sequence

import torch
from mmengine.model import constant_init, kaiming_init
from torch import Tensor, nn

from ..ops import softmax_pool
from ..registry import MODELS
from ._validate import (
    check_choice,
    check_input,
    check_positive_int,
    check_positive_number,
)

POOLING_TYPES = ('att', 'avg')
FUSION_TYPES = ('channel_add', 'channel_mul', 'channel_gate')


def _transform(channels: int, planes: int) -> nn.Sequential:
    """The bottleneck transform: 1x1 conv, LayerNorm, ReLU, 1x1 conv."""
    return nn.Sequential(
        nn.Conv2d(channels, planes, kernel_size=1),
        nn.LayerNorm([planes, 1, 1]),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, channels, kernel_size=1))


@MODELS.register_module()
class ContextBlock(nn.Module):
    """Global context block: pool a context vector, transform it, fuse it.

    Args:
        in_channels (int): Channels of the ``[N, C, H, W]`` input.
        ratio (float): Bottleneck width of the transforms as a fraction of
            ``in_channels`` (GCNet's ``r16`` is ``1 / 16``). Default: 1 / 16.
        pooling_type (str): ``'att'`` (softmax-weighted sum over positions)
            or ``'avg'`` (global average). Default: ``'att'``.
        fusion_types (Sequence[str]): One or more of ``'channel_add'``
            (``x + t``), ``'channel_mul'`` (``x * sigmoid(t)``, as mmcv; it
            is not the identity at init) and ``'channel_gate'``
            (``x * 2 sigmoid(t)``, the identity at init). Multiplications
            apply before the addition. Default: ``('channel_add',)``.
    """

    _abbr_ = 'context_block'

    def __init__(self,
                 in_channels: int,
                 ratio: float = 1. / 16,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', )) -> None:
        super().__init__()
        in_channels = check_positive_int('in_channels', in_channels)
        ratio = check_positive_number('ratio', ratio)
        check_choice('pooling_type', pooling_type, POOLING_TYPES)
        if isinstance(fusion_types, str) or not isinstance(
                fusion_types, Sequence):
            raise TypeError('fusion_types must be a list or tuple of '
                            f'{FUSION_TYPES}, got {fusion_types!r}')
        if not fusion_types:
            raise ValueError(
                f'fusion_types needs at least one of {FUSION_TYPES}')
        for fusion in fusion_types:
            check_choice('fusion_types', fusion, FUSION_TYPES)
        self.in_channels = in_channels
        self.ratio = ratio
        self.planes = max(1, int(in_channels * ratio))
        self.pooling_type = pooling_type
        self.fusion_types = tuple(fusion_types)
        # None for 'avg', as the absent transforms are, so that TorchScript
        # can tell statically which branch of spatial_pool runs.
        self.conv_mask = (nn.Conv2d(in_channels, 1, kernel_size=1)
                          if pooling_type == 'att' else None)
        for fusion in FUSION_TYPES:
            transform = (_transform(in_channels, self.planes)
                         if fusion in self.fusion_types else None)
            setattr(self, f'{fusion}_conv', transform)
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming mask conv; last conv of each transform at zero."""
        if self.pooling_type == 'att':
            kaiming_init(self.conv_mask, mode='fan_in')
        for fusion in self.fusion_types:
            constant_init(getattr(self, f'{fusion}_conv')[-1], 0)

    def spatial_pool(self, x: Tensor) -> Tensor:
        """The context vector, ``[N, C, 1, 1]``."""
        if self.conv_mask is None:  # pooling_type='avg'
            return x.mean(dim=(2, 3), keepdim=True)
        logits = self.conv_mask(x).flatten(1)  # [N, HW]
        values = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        context = softmax_pool(logits, values)  # [N, C]
        return context[:, :, None, None]  # [N, C, 1, 1]

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # TorchScript skips this branch
            check_input(type(self).__name__, x, self.in_channels,
                        'N, C, H, W')
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_gate_conv is not None:
            out = out * (2 * torch.sigmoid(self.channel_gate_conv(context)))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, planes={self.planes}, '
                f'pooling_type={self.pooling_type!r}, '
                f'fusion_types={self.fusion_types}')
