"""mmseg's ResNetV1c with attention blocks between residual blocks.

This module needs mmseg; :mod:`nonlocal_plugin.backbones` imports it only
when mmseg is installed. The placement options, and the papers' placements
they express, are described in :mod:`.det_resnet`.
"""
from mmseg.models.backbones import resnet as seg_resnet

from ..registry import MODELS
from ._placement import BasicBlockPluginsMixin, BetweenBlocksMixin


class SegBasicBlockWithPlugins(BasicBlockPluginsMixin,
                               seg_resnet.BasicBlock):
    """mmseg's BasicBlock with ``after_conv1``/``after_conv2`` plugins."""


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
