"""Backbones that place the blocks where the papers do."""
from .resnet import (
    DetBasicBlockWithPlugins,
    ResNetNL,
    ResNetV1cNL,
    SegBasicBlockWithPlugins,
)

__all__ = [
    'DetBasicBlockWithPlugins', 'ResNetNL', 'ResNetV1cNL',
    'SegBasicBlockWithPlugins'
]
