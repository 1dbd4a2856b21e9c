"""Toy datasets in real formats, built on first use."""
from .toy import (
    TOY_COCO_CLASSES,
    ensure_toy_dataset,
    make_toy_cityscapes,
    make_toy_coco,
)

__all__ = [
    'TOY_COCO_CLASSES', 'ensure_toy_dataset', 'make_toy_cityscapes',
    'make_toy_coco'
]
