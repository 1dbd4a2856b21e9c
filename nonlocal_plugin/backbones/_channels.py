"""The channel count a module declares for its input or output.

Part of the insertion mechanism of :mod:`.insert_blocks` (blocks of "Non-local
Neural Networks", https://arxiv.org/abs/1711.07971, GCNet,
https://arxiv.org/abs/1904.11492, and DNL, https://arxiv.org/abs/2006.06668),
which fills in a block's ``in_channels`` from the module the block follows
or precedes, without running the model. Only what a module states is used:

* an ``out_channels`` (``in_channels``) attribute: convs, mmcv's
  ``ConvModule``, many library blocks;
* a ResNet-family residual block's last norm (``norm3`` of a Bottleneck,
  ``norm2`` of a BasicBlock): mmdet's, mmseg's and mmpretrain's ResNet,
  ResNeXt, RegNet, Res2Net and HRNet blocks (``planes * expansion`` is not
  used: RegNet builds its blocks with ``expansion=1`` and then restores 4);
  for the input, ``inplanes``;
* a batch, instance or group norm's ``num_features`` / ``num_channels``;
* a ``Sequential``: its last (first) child that declares one, past
  activations, pooling and dropout, which keep the channels.

Anything else returns None, and the caller says that the width cannot be
found without running the model.
"""
from __future__ import annotations

from typing import Optional

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

# Modules whose output has the channels of their input.
_KEEPS_CHANNELS_MODULES = ('torch.nn.modules.activation',
                           'torch.nn.modules.pooling',
                           'torch.nn.modules.dropout',
                           'mmcv.cnn.bricks.activation',
                           'mmcv.cnn.bricks.hsigmoid',
                           'mmcv.cnn.bricks.hswish', 'mmcv.cnn.bricks.swish',
                           'mmcv.cnn.bricks.drop')


# helper functions


def _int_attr(module: nn.Module, name: str) -> Optional[int]:
    value = getattr(module, name, None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _norm_width(module: object) -> Optional[int]:
    """The channels of a batch, instance or group norm (channels first)."""
    if isinstance(module, (_BatchNorm, _InstanceNorm)):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    return None


def keeps_channels(module: nn.Module) -> bool:
    """Activations, pooling, dropout and ``nn.Identity``."""
    return (isinstance(module, nn.Identity)
            or type(module).__module__ in _KEEPS_CHANNELS_MODULES)


def _residual_norm(module: nn.Module) -> Optional[int]:
    """The width of a ResNet-family block's last norm (before the add)."""
    if not hasattr(module, 'conv1'):
        return None
    for name in ('norm3', 'norm2'):  # Bottleneck, BasicBlock
        try:
            norm = getattr(module, name, None)
        except AttributeError:  # a property whose layer is absent
            norm = None
        width = _norm_width(norm)
        if width is not None:
            return width
    return None


# main functions


def output_channels(module: nn.Module) -> Optional[int]:
    """The channels of the module's output, if it declares them.

    Args:
        module (nn.Module): The module a block is inserted after.

    Returns:
        int or None: None where only running the model would tell.
    """
    for width in (_int_attr(module, 'out_channels'), _residual_norm(module),
                  _norm_width(module)):
        if width is not None:
            return width
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module.children())):
            if not keeps_channels(child):
                return output_channels(child)
    return None


def input_channels(module: nn.Module) -> Optional[int]:
    """The channels of the module's input, if it declares them.

    Args:
        module (nn.Module): The module a block is inserted before.

    Returns:
        int or None: None where only running the model would tell.
    """
    for width in (_int_attr(module, 'in_channels'),
                  _int_attr(module, 'inplanes'), _norm_width(module)):
        if width is not None:
            return width
    if isinstance(module, nn.Sequential):
        for child in module.children():
            if not keeps_channels(child):
                return input_channels(child)
    return None
