"""mmdet's ResNet with attention blocks where the papers put them.

This module needs mmdet; :mod:`nonlocal_plugin.backbones` imports it only
when mmdet is installed. mmseg's twin is :mod:`.seg_resnet`.

Papers:

* Non-local (NL): "Non-local Neural Networks", Wang et al., CVPR 2018,
  https://arxiv.org/abs/1711.07971.
* GCNet: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
  Beyond", Cao et al., 2019, https://arxiv.org/abs/1904.11492.
* DNL: "Disentangled Non-Local Neural Networks", Yin et al., ECCV 2020,
  https://arxiv.org/abs/2006.06668.

mmdet's ``plugins`` key can only put a block *inside* a residual block
(after conv1, conv2 or conv3, before the residual add). That is where GCNet
puts its blocks (after conv3 of every bottleneck of c3-c5, ``position=
'after_conv3'``). The NL paper's blocks sit *between* residual blocks, after
the add: its 1-block models put one "right before the last residual block
of res4", its 5-block models one after every other residual block of res3
and res4 (blocks 1 and 3, and 1, 3 and 5, as the official video code's
``i % 2 == 1`` picks them). A DNL block can take an NL block's place. The
``between_blocks`` option expresses these::

    nl = dict(type='nonlocal_plugin.NonLocal2D')
    # NL, 1 block: after the last-but-one residual block of res4 (layer3)
    between_blocks=[dict(cfg=nl, stages=(False, False, True, False),
                         after=(-2, ))]
    # NL, 5 blocks: 2 in res3 (layer2), 3 in res4 (layer3)
    between_blocks=[
        dict(cfg=nl, stages=(False, True, False, False), after=(1, 3)),
        dict(cfg=nl, stages=(False, False, True, False), after=(1, 3, 5))]

The inserted blocks live outside the ``layerN`` Sequentials, in a
``between_layerN`` ModuleDict keyed ``after{i}_{name}`` (``i`` the residual
block's non-negative index, ``name`` the block's ``_abbr_`` plus any
``postfix``, e.g. ``between_layer3.after4_nonlocal_block``), so ResNet's own
keys keep their numbering and ImageNet checkpoints load into the ResNet part
unchanged, with ``strict=True`` when they have none of the blocks' keys.
``between_blocks`` is a stage-wise spelling of ``nonlocal_plugin.
InsertBlocks`` (:mod:`.insert_blocks`), which works for any backbone:
``stages=(False, False, True, False), after=(-2, )`` is
``after='layer3.-2'`` there, with the same keys.

The official DNL detection code
(https://github.com/Howal/DNL-Object-Detection) and GCNet's "after add"
ablation row put the block in a third place: after the residual add, before
the residual block's final ReLU.
``plugins`` takes it as ``position='after_add'``, at every depth, with an
optional ``blocks`` key choosing residual blocks as ``after`` does::

    dnl = dict(type='nonlocal_plugin.DisentangledNonLocalDet2D')
    # DNL after the add of res4's last-but-one block
    plugins=[dict(cfg=dnl, stages=(False, False, True, False),
                  position='after_add', blocks=(-2, ))]

Those blocks are attributes of their residual block, as mmdet's plugins are
(``layer3.4.dnl_det_block``); without ``blocks`` every residual block of
the stage gets one. The code is in :mod:`._after_add`.

Both classes also accept ``plugins`` for depths 18 and 34 (BasicBlock,
positions ``'after_conv1'`` and ``'after_conv2'``), which mmdet and mmseg
refuse. Depths 50 and up keep the parent's behaviour for
``'after_conv1'``, ``'after_conv2'`` and ``'after_conv3'``.
"""
from mmdet.models.backbones import resnet as det_resnet

from ..registry import MODELS
from ._after_add import BottleneckAfterAddMixin
from ._placement import BasicBlockPluginsMixin, BetweenBlocksMixin


class DetBasicBlockWithPlugins(BasicBlockPluginsMixin,
                               det_resnet.BasicBlock):
    """mmdet's BasicBlock with ``after_conv1``/``after_conv2``/``after_add``
    plugins."""


class DetBottleneckAfterAdd(BottleneckAfterAddMixin, det_resnet.Bottleneck):
    """mmdet's Bottleneck with blocks after the add, before the ReLU."""


@MODELS.register_module()
class ResNetNL(BetweenBlocksMixin, det_resnet.ResNet):
    """mmdet's ``ResNet`` with blocks between residual blocks.

    Config: ``type='nonlocal_plugin.ResNetNL'``. See
    :class:`~nonlocal_plugin.backbones._placement.BetweenBlocksMixin` for
    ``between_blocks``, ``position='after_add'`` and the BasicBlock
    ``plugins``; every other argument is mmdet's ``ResNet``'s.
    """

    _basic_block = det_resnet.BasicBlock
    _plugin_basic_block = DetBasicBlockWithPlugins
    _bottleneck = det_resnet.Bottleneck
    _after_add_bottleneck = DetBottleneckAfterAdd
