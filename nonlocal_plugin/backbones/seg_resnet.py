"""mmseg's ResNetV1c with attention blocks between residual blocks.

This module needs mmseg; :mod:`nonlocal_plugin.backbones` imports it only
when mmseg is installed. The placement options, and the papers' placements
they express, are described in :mod:`.det_resnet`.
"""
from mmseg.models.backbones import resnet as seg_resnet

from ..registry import MODELS
from ._after_add import BottleneckAfterAddMixin
from ._placement import BasicBlockPluginsMixin, BetweenBlocksMixin


class SegBasicBlockWithPlugins(BasicBlockPluginsMixin,
                               seg_resnet.BasicBlock):
    """mmseg's BasicBlock with ``after_conv1``/``after_conv2``/``after_add``
    plugins."""


class SegBottleneckAfterAdd(BottleneckAfterAddMixin, seg_resnet.Bottleneck):
    """mmseg's Bottleneck with blocks after the add, before the ReLU.

    Its plugins run through ``forward_plugin``, which the package fixes on
    import where mmseg's does not chain them (``mmseg_plugin_chaining``).
    """


@MODELS.register_module()
class ResNetV1cNL(BetweenBlocksMixin, seg_resnet.ResNetV1c):
    """mmseg's ``ResNetV1c`` (deep stem) with blocks between residual blocks.

    Config: ``type='nonlocal_plugin.ResNetV1cNL'``. The options are
    :class:`~nonlocal_plugin.backbones.det_resnet.ResNetNL`'s; every other
    argument is mmseg's ``ResNetV1c``'s (``multi_grid``,
    ``contract_dilation``, ...).
    """

    _basic_block = seg_resnet.BasicBlock
    _plugin_basic_block = SegBasicBlockWithPlugins
    _bottleneck = seg_resnet.Bottleneck
    _after_add_bottleneck = SegBottleneckAfterAdd
