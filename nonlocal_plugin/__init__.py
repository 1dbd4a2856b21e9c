"""Non-local, GC and DNL attention blocks as OpenMMLab plugins.

Importing the package registers the blocks in the ``nonlocal_plugin``
registry scope (``type='nonlocal_plugin.NonLocal2D'`` in a config) and
applies those fixes in :mod:`nonlocal_plugin.compat` that the installed
peers need. The blocks need only torch, mmcv and mmengine; the backbones
register when mmdet / mmseg can be imported.
"""
from . import backbones, compat  # noqa: F401
from .blocks import (
    ContextBlock,
    DisentangledNonLocal,
    DisentangledNonLocalDet2D,
    NonLocal1D,
    NonLocal2D,
    NonLocal3D,
    NonLocalNd,
    SimplifiedNonLocal2D,
)
from .registry import MODELS, SCOPE

__version__ = '0.1.0'

compat.apply_all()

__all__ = [
    'MODELS', 'SCOPE', 'ContextBlock', 'DisentangledNonLocal',
    'DisentangledNonLocalDet2D', 'NonLocal1D', 'NonLocal2D', 'NonLocal3D',
    'NonLocalNd', 'SimplifiedNonLocal2D', '__version__'
]
