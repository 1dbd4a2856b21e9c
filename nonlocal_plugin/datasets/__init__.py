"""Toy datasets in real formats, built on first use."""
from .toy import (
    TOY_COCO_CLASSES,
    ensure_toy_dataset,
    make_toy_cityscapes,
    make_toy_coco,
)
from .toy_matching import TOY_COCO_MATCHING_CLASSES, make_toy_coco_matching

__all__ = [
    'TOY_COCO_CLASSES', 'TOY_COCO_MATCHING_CLASSES', 'ensure_toy_dataset',
    'make_toy_cityscapes', 'make_toy_coco', 'make_toy_coco_matching'
]
