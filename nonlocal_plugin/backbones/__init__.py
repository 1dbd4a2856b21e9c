"""Backbones that place the blocks where the papers put them.

``ResNetNL`` (mmdet's ResNet) registers when mmdet can be imported and
``ResNetV1cNL`` (mmseg's ResNetV1c) when mmseg can; otherwise a stand-in of
the same name raises :class:`MissingLibraryError` saying what to install
(the library, or mmcv's compiled ops, which their models import and
``mmcv-lite`` lacks).
"""
from ._missing import MissingLibraryError, is_missing, register_missing
from .insert_blocks import insert_blocks

__all__ = ['MissingLibraryError', 'insert_blocks']

try:
    from .det_resnet import DetBasicBlockWithPlugins, ResNetNL
    __all__ += ['DetBasicBlockWithPlugins', 'ResNetNL']
except ModuleNotFoundError as err:
    if not is_missing(err, 'mmdet'):
        raise
    ResNetNL = register_missing('ResNetNL', err, 'mmdet')

try:
    from .seg_resnet import ResNetV1cNL, SegBasicBlockWithPlugins
    __all__ += ['ResNetV1cNL', 'SegBasicBlockWithPlugins']
except ModuleNotFoundError as err:
    if not is_missing(err, 'mmseg'):
        raise
    ResNetV1cNL = register_missing('ResNetV1cNL', err, 'mmseg')
