"""``nonlocal_plugin.InsertBlocks``: blocks anywhere in any backbone.

Papers whose placements this expresses:

* NL: "Non-local Neural Networks", Wang et al., CVPR 2018,
  https://arxiv.org/abs/1711.07971. 1 block right before the last residual
  block of res4; 5 blocks, one after every other residual block of res3 and
  res4 (the official video code picks blocks ``i % 2 == 1``).
* GCNet: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
  Beyond", Cao et al., 2019, https://arxiv.org/abs/1904.11492. A block
  after the last norm of every bottleneck of c3-c5 (before the residual
  add), where mmdet's ``plugins`` put it with ``position='after_conv3'``.
* DNL: "Disentangled Non-Local Neural Networks", Yin et al., ECCV 2020,
  https://arxiv.org/abs/2006.06668. An NL block's place.

A config wraps the backbone's own config, from the mmdet, mmseg or
mmpretrain registry, and says where the blocks go by module path::

    nl = dict(type='nonlocal_plugin.NonLocal2D')
    backbone = dict(
        type='nonlocal_plugin.InsertBlocks',
        backbone=dict(type='mmdet.ResNeXt', depth=101, groups=32,
                      base_width=4, ...),
        blocks=[dict(cfg=nl, before='layer3.-1')])   # NL, 1 block
    # NL, 5 blocks:   [dict(cfg=nl, after=('layer2.1::2', 'layer3.1::2'))]
    # GC, c3-c5:      [dict(cfg=gc, after='layer[234].*.bn3')]
    # mmpretrain's ConvNeXt, whose blocks declare no width:
    #   [dict(cfg=dict(gc, in_channels=384), after='stages.2.-1')]

The path syntax (names, globs, python indices and slices) is described in
:mod:`._paths`; the mechanism (hooks, keys, freezing, loading) in
:mod:`._insertion`. What is built is the backbone itself, of its own class,
with the blocks added: its state-dict keys are those of the plain backbone,
plus ``between_*`` keys for the blocks.

No model library is imported here: the backbone's type is looked up in
the registry of its scope (``'mmdet.ResNet'``, or ``'ResNet'`` under mmdet's
default scope) when the config is built, so mmdet, mmseg or mmpretrain
alone is enough, and a missing one is named in the error.
"""
from __future__ import annotations

import importlib.util
from typing import Any, List

from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope, Registry
from torch import nn

from ..registry import MODELS, SCOPE
from ._insertion import attach_blocks
from ._missing import MissingLibraryError


def _build_backbone(cfg: Any) -> nn.Module:
    """Builds the wrapped backbone through the registry of its scope."""
    if not isinstance(cfg, dict):
        raise TypeError("backbone must be a backbone's config, a dict with a "
                        "'type', e.g. dict(type='mmdet.ResNet', depth=50), "
                        f'got {cfg!r}')
    if 'type' not in cfg:
        raise ValueError("backbone needs a 'type', e.g. 'mmdet.ResNet', "
                         "'mmseg.ResNetV1c' or 'mmpretrain.ConvNeXt', got "
                         f'{cfg!r}')
    kind = cfg['type']
    if isinstance(kind, str):
        scope, _ = Registry.split_scope_key(kind)
        if scope is None:
            current = DefaultScope.get_current_instance()
            if current is None:
                raise ValueError(
                    f"backbone type {kind!r} has no scope and no default "
                    "scope is set: write its library's scope, e.g. "
                    "'mmdet.ResNet', 'mmseg.ResNetV1c' or "
                    "'mmpretrain.ConvNeXt'")
            scope = current.scope_name
        if scope != SCOPE and importlib.util.find_spec(scope) is None:
            raise MissingLibraryError(
                f'backbone type {kind!r} needs {scope}, which is not '
                f'installed: pip install {scope}')
    backbone = ROOT_MODELS.build(cfg)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f'backbone type {kind!r} built a '
                        f'{type(backbone).__name__}, not a torch module')
    return backbone


_KEEP = object()  # init_cfg not given: the backbone's own stays


def insert_blocks(backbone: dict,
                  *,
                  blocks: List[dict],
                  with_cp: bool | None = None,
                  init_cfg: Any = _KEEP) -> nn.Module:
    """Builds a backbone and inserts blocks after or before its modules.

    Registered as ``nonlocal_plugin.InsertBlocks``.

    Args:
        backbone (dict): The backbone's config. Its ``type`` is scoped
            (``'mmdet.RegNet'``, ``'mmseg.ResNetV1c'``,
            ``'mmpretrain.ConvNeXt'``) or found in the default scope.
        blocks (list[dict]): Where the blocks go. Each entry is
            ``dict(cfg=..., after=...)`` or ``dict(cfg=..., before=...)``:

            - cfg (dict): The block's config, e.g.
              ``dict(type='nonlocal_plugin.NonLocal2D')``; ``in_channels``
              is inferred from the module (given here, it must agree). An
              optional ``postfix`` is appended to the block's name.
            - after / before (str | list[str]): Module paths with globs,
              indices and slices: ``'layer3.-2'``, ``'layer3.*'``,
              ``'layer[23].1::2'``, ``'stages.2.blocks.-1'``. ``before`` an
              element of a ``Sequential`` is ``after`` the one before it
              (the same place and key).

            Blocks at one place run in list order. A path that matches
            nothing, a width that cannot be inferred and a block that would
            change the feature map's shape fail here, naming the path.
        with_cp (bool, optional): Checkpoint the blocks' activations. None
            follows the backbone's ``with_cp``. Default: None.
        init_cfg (dict, optional): Given, it replaces the backbone's
            ``init_cfg``, so that ``--cfg-options model.backbone.init_cfg=
            None`` trains from scratch as it does for a plain backbone.
            Default: the backbone's own.

    Returns:
        nn.Module: The backbone, of its own class, with the blocks in
        ``between_*`` containers.
    """
    if init_cfg is not _KEEP:
        if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
            raise TypeError('init_cfg must be a dict, a list of dicts or '
                            f'None, got {init_cfg!r}')
        if not isinstance(backbone, dict):
            raise TypeError("backbone must be a backbone's config, a dict "
                            f"with a 'type', got {backbone!r}")
        backbone = dict(backbone, init_cfg=init_cfg)
    model = _build_backbone(backbone)
    if with_cp is not None and not isinstance(with_cp, bool):
        raise TypeError(f'with_cp must be a bool or None, got {with_cp!r}')
    attach_blocks(model, blocks, with_cp=with_cp, option='blocks')
    return model


MODELS.register_module(name='InsertBlocks', module=insert_blocks)
