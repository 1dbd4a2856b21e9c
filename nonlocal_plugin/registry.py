"""The package's own registry scope.

The blocks register in a child of mmengine's root ``MODELS`` registry with the
scope ``nonlocal_plugin``. From an mmdet or mmseg config they are written with
the scope prefix, ``type='nonlocal_plugin.NonLocal2D'``, which the parent
registries resolve through the root. Nothing is registered in the root or in
mmdet's and mmseg's registries, so mmcv's ``NonLocal2d`` and ``ContextBlock``
keep their names and are never shadowed, and ours are never shadowed by them.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

SCOPE = 'nonlocal_plugin'

MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE,
                  locations=['nonlocal_plugin'])
