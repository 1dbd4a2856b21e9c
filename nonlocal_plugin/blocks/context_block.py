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

Options beyond mmcv, keyword-only, express the rows of GCNet's ablation of
the transform (Table 2): ``ratio=None`` is one ``C x C`` 1x1 conv with no
bottleneck ("w/o ratio"); ``use_layer_norm=False`` and ``use_relu=False``
drop the LayerNorm and the ReLU of the bottleneck ("r16", "r16+ReLU",
"r16+LN+ReLU" are ``ratio=1 / 16`` with neither, with the ReLU, with both).
With the defaults the block is mmcv's, state dict and outputs included.
:class:`SimplifiedNonLocal2D` is GCNet's simplified NL block (SNL),
``ContextBlock(in_channels, ratio=None)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmengine.model import constant_init, kaiming_init
from torch import Tensor, nn

from ..ops import softmax_pool
from ..registry import MODELS
from ._validate import (
    check_bool,
    check_choice,
    check_input,
    check_positive_int,
    check_positive_number,
)

POOLING_TYPES = ('att', 'avg')
FUSION_TYPES = ('channel_add', 'channel_mul', 'channel_gate')


def _transform(channels: int, planes: Optional[int], layer_norm: bool,
               relu: bool) -> nn.Sequential:
    """The transform of the context vector.

    The bottleneck is 1x1 conv, LayerNorm, ReLU, 1x1 conv (mmcv's modules
    ``0`` to ``3``); a dropped LayerNorm or ReLU leaves an ``nn.Identity``
    in its place, so the convs keep the keys ``0`` and ``3``. Without a
    bottleneck (``planes=None``) it is one ``C x C`` conv, key ``0``.
    """
    if planes is None:
        return nn.Sequential(nn.Conv2d(channels, channels, kernel_size=1))
    return nn.Sequential(
        nn.Conv2d(channels, planes, kernel_size=1),
        nn.LayerNorm([planes, 1, 1]) if layer_norm else nn.Identity(),
        nn.ReLU(inplace=True) if relu else nn.Identity(),
        nn.Conv2d(planes, channels, kernel_size=1))


def _check_ratio(ratio: object) -> Optional[float]:
    if ratio is None:
        return None
    try:
        return check_positive_number('ratio', ratio)
    except TypeError:
        raise TypeError('ratio must be a positive number or None (no '
                        f'bottleneck), got {ratio!r}') from None


def _check_part(name: str, value: object, ratio: Optional[float]) -> bool:
    """Resolves ``use_layer_norm`` / ``use_relu`` against the ratio."""
    if value is None:
        return ratio is not None
    try:
        value = check_bool(name, value)
    except TypeError:
        raise TypeError(f'{name} must be a bool or None, got {value!r}') \
            from None
    if value and ratio is None:
        raise ValueError(f'{name}=True needs a bottleneck (a number ratio); '
                         'ratio=None is one C x C conv. Allowed with '
                         'ratio=None: None or False')
    return value


@MODELS.register_module()
class ContextBlock(nn.Module):
    """Global context block: pool a context vector, transform it, fuse it.

    Args:
        in_channels (int): Channels of the ``[N, C, H, W]`` input.
        ratio (float, optional): Bottleneck width of the transforms as a
            fraction of ``in_channels`` (GCNet's ``r16`` is ``1 / 16``), or
            None for no bottleneck: one ``C x C`` 1x1 conv (GCNet's "w/o
            ratio" row, the transform of the simplified NL block).
            Default: 1 / 16.
        pooling_type (str): ``'att'`` (softmax-weighted sum over positions)
            or ``'avg'`` (global average). Default: ``'att'``.
        fusion_types (Sequence[str]): One or more of ``'channel_add'``
            (``x + t``), ``'channel_mul'`` (``x * sigmoid(t)``, as mmcv; it
            is not the identity at init) and ``'channel_gate'``
            (``x * 2 sigmoid(t)``, the identity at init). Multiplications
            apply before the addition. Default: ``('channel_add',)``.
        use_layer_norm (bool, optional): LayerNorm after the first conv of
            the bottleneck. Keyword-only. Default: None, which is True with
            a bottleneck (mmcv's block) and False with ``ratio=None`` (where
            True is refused).
        use_relu (bool, optional): ReLU in the bottleneck, as
            ``use_layer_norm``. Default: None.

    The last conv of each transform starts at zero, so with
    ``'channel_add'`` and ``'channel_gate'`` the block is the identity at
    init.
    """

    _abbr_ = 'context_block'

    def __init__(self,
                 in_channels: int,
                 ratio: Optional[float] = 1. / 16,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', ),
                 *,
                 use_layer_norm: Optional[bool] = None,
                 use_relu: Optional[bool] = None) -> None:
        super().__init__()
        in_channels = check_positive_int('in_channels', in_channels)
        ratio = _check_ratio(ratio)
        use_layer_norm = _check_part('use_layer_norm', use_layer_norm, ratio)
        use_relu = _check_part('use_relu', use_relu, ratio)
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
        # None: no bottleneck.
        self.planes = (None if ratio is None else max(
            1, int(in_channels * ratio)))
        self.use_layer_norm = use_layer_norm
        self.use_relu = use_relu
        self.pooling_type = pooling_type
        self.fusion_types = tuple(fusion_types)
        # None for 'avg', as the absent transforms are, so that TorchScript
        # can tell statically which branch of spatial_pool runs.
        self.conv_mask = (nn.Conv2d(in_channels, 1, kernel_size=1)
                          if pooling_type == 'att' else None)
        for fusion in FUSION_TYPES:
            transform = (_transform(in_channels, self.planes, use_layer_norm,
                                    use_relu)
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
                f'fusion_types={self.fusion_types}, '
                f'use_layer_norm={self.use_layer_norm}, '
                f'use_relu={self.use_relu}')


@MODELS.register_module()
class SimplifiedNonLocal2D(ContextBlock):
    """GCNet's simplified non-local block (SNL, GCNet Sec. 3.2, Fig. 3b).

    ``x_i + W_v sum_j softmax_j(W_k x_j) x_j + b_v``: attention pooling and
    one ``C x C`` 1x1 conv (``W_v``, with a bias), added to every position;
    no bottleneck, LayerNorm or ReLU. It is
    ``ContextBlock(in_channels, ratio=None)``, with the same state-dict
    keys (``conv_mask``, ``channel_add_conv.0``). ``W_v`` starts at zero,
    so the block is the identity at init.

    The DNL authors' detection code (github.com/Howal/DNL-Object-Detection,
    ``mmdet/ops/context_block.py``, ``simple=True``) applies ``W_v`` before
    the pooling, which is the same function, without a bias and with a
    normal init of std 0.01: ``bias=False, std=0.01`` is that block.

    Args:
        in_channels (int): Channels of the ``[N, C, H, W]`` input.
        bias (bool): Give ``W_v`` a bias. Default: True.
        std (float, optional): Init ``W_v`` from ``N(0, std^2)`` instead of
            zeros (then the block is not the identity at init).
            Default: None.
    """

    _abbr_ = 'snl_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 bias: bool = True,
                 std: Optional[float] = None) -> None:
        super().__init__(in_channels, None, 'att', ('channel_add', ))
        self.bias = check_bool('bias', bias)
        self.std = None if std is None else check_positive_number('std', std)
        if not self.bias:
            self.channel_add_conv[0] = nn.Conv2d(
                self.in_channels, self.in_channels, kernel_size=1, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """As ContextBlock, or ``W_v`` from ``N(0, std^2)`` with ``std``."""
        super().init_weights()
        if getattr(self, 'std', None) is not None:
            nn.init.normal_(self.channel_add_conv[0].weight, 0, self.std)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, bias={self.bias}, '
                f'std={self.std}')
