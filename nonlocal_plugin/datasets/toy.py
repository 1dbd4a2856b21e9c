"""Small synthetic datasets, in COCO's and Cityscapes' real formats.

Both are built so that *long-range context decides the labels*: every image
has a coloured cue bar along one side edge, and the objects (or blobs) in the
other half of the image are all drawn in the same gray, whatever their
class. An object's class is the colour of the cue, which sits far away from
it; the object itself carries no hint of its class. A model that sees the
whole image (a non-local or global-context block) can read the cue; a model
whose features are local has to pass it across the image through many
convolutions.

* :func:`make_toy_coco` writes ``annotations/instances_{train,val}2017.json``
  (COCO instances with polygon segmentations) and the PNG images in
  ``train2017/`` and ``val2017/``, ready for mmdet's ``CocoDataset``.
* :func:`make_toy_cityscapes` writes ``leftImg8bit/{split}/<city>/
  <name>_leftImg8bit.png`` and ``gtFine/{split}/<city>/
  <name>_gtFine_labelTrainIds.png`` (plus ``_gtFine_labelIds.png``), ready for
  mmseg's ``CityscapesDataset``.
* :func:`ensure_toy_dataset` builds one of them, or the matching task of
  :mod:`.toy_matching` (whose context depends on the object), on first
  use. The drawing and COCO-writing helpers live in :mod:`._drawing`.

Everything is drawn from ``numpy.random.default_rng(seed)`` and written as
PNG, so one seed always gives the same bytes. A dataset is written into a
temporary directory and renamed into place when complete, so processes that
start together (``torchrun``) never see half a dataset.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from ._drawing import (
    CUE_COLOURS,
    CUE_FRACTION,
    FAR_FRACTION,
    _background,
    _cue_width,
    _far_range,
    _fill,
    _place_objects,
    _size,
    _write_png,
    write_coco,
)
from .toy_matching import make_toy_coco_matching

TOY_COCO_CLASSES = tuple(f'{name}_cue' for name in CUE_COLOURS)

# Cityscapes train ids (and label ids) of the toy segmentation classes.
CITYSCAPES_TRAIN_IDS = {
    'road': 0,  # background
    'wall': 3,  # the cue band
    'car': 13,  # blobs next to a red cue
    'truck': 14,  # ... a green cue
    'bus': 15,  # ... a blue cue
}
CITYSCAPES_LABEL_IDS = {0: 7, 3: 12, 13: 26, 14: 27, 15: 28, 255: 0}
SEG_BLOB_CLASSES = ('car', 'truck', 'bus')

MARKER = 'toy_dataset.json'
KINDS = ('coco', 'coco_matching', 'cityscapes')
__all__ = [
    'CITYSCAPES_LABEL_IDS', 'CITYSCAPES_TRAIN_IDS', 'CUE_COLOURS',
    'CUE_FRACTION', 'FAR_FRACTION', 'KINDS', 'SEG_BLOB_CLASSES',
    'TOY_COCO_CLASSES', 'ensure_toy_dataset', 'make_toy_cityscapes',
    'make_toy_coco'
]

# helper functions


def _draw_cue(img: np.ndarray, side: str, colour: Sequence[int],
              width: int) -> Tuple[int, int]:
    """Paints the cue band along the ``side`` edge; returns its x range."""
    x0, x1 = (0, width) if side == 'left' else (img.shape[1] - width,
                                                img.shape[1])
    img[:, x0:x1] = np.asarray(colour, dtype=np.uint8)[::-1]  # BGR
    return x0, x1


def _random_polygon(rng: np.random.Generator, cx: float, cy: float,
                    radius: float) -> np.ndarray:
    """A star-convex polygon around ``(cx, cy)``, ``[K, 2]`` float."""
    num = int(rng.integers(3, 9))
    step = 2 * np.pi / num
    # Evenly spread vertices, jittered by less than half a step, so the
    # polygon stays simple and is never a sliver.
    angles = (rng.uniform(0, 2 * np.pi) + step * np.arange(num) +
              rng.uniform(-0.3, 0.3, size=num) * step)
    radii = radius * rng.uniform(0.6, 1.0, size=num)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)],
                    axis=1)


def _draw_scene(rng: np.random.Generator, height: int, width: int,
                max_objects: int, radius_range: Tuple[float, float]):
    """One toy image: background, cue bar, gray polygons far from the cue.

    Returns:
        tuple: The ``[H, W, 3]`` BGR image, the index of the cue colour in
        :data:`CUE_COLOURS`, the cue's x range and the polygons.
    """
    colour_index = int(rng.integers(len(CUE_COLOURS)))
    side = 'left' if rng.random() < 0.5 else 'right'
    img = _background(rng, height, width)
    cue = _draw_cue(img, side,
                    list(CUE_COLOURS.values())[colour_index],
                    _cue_width(width))
    polygons = _place_objects(rng, int(rng.integers(1, max_objects + 1)),
                              _far_range(side, width, 2), (2, height - 2),
                              radius_range, _random_polygon)
    for polygon in polygons:
        gray = int(rng.integers(150, 215))
        _fill(img, polygon, (gray, gray, gray))
    return img, colour_index, cue, polygons


# main functions


def make_toy_coco(root: str,
                  *,
                  seed: int = 0,
                  num_train: int = 320,
                  num_val: int = 64,
                  img_size: Union[int, Sequence[int]] = (96, 256),
                  max_objects: int = 3) -> str:
    """Writes the toy COCO instances dataset into ``root``.

    Each image has a cue bar (red, green or blue) along its left or right
    edge and 1 to ``max_objects`` gray polygons in the other half. Every
    polygon's category is ``'<colour>_cue'``: the colour of the bar, about
    half the image width away.

    Args:
        root (str): Directory to write (``annotations/``, ``train2017/``,
            ``val2017/``). It is created; existing files are overwritten.
        seed (int): Seed of the generator. Default: 0.
        num_train (int): Training images. Default: 320.
        num_val (int): Validation images. Default: 64.
        img_size (int | tuple[int, int]): ``(height, width)`` of the
            images, or the side of square ones. Default: ``(96, 256)``.
        max_objects (int): Most objects in one image. Default: 3.

    Returns:
        str: ``root``.
    """
    rng = np.random.default_rng(seed)
    height, width = _size(img_size)

    def draw():
        img, colour_index, _, polygons = _draw_scene(
            rng, height, width, max_objects, (height * 0.1, height * 0.2))
        return img, [(colour_index, polygon) for polygon in polygons]

    return write_coco(
        root,
        draw,
        classes=TOY_COCO_CLASSES,
        description='nonlocal_plugin toy COCO: an object '
        "'s class is the colour of a far-away cue bar",
        num_train=num_train,
        num_val=num_val,
        height=height,
        width=width)


def make_toy_cityscapes(root: str,
                        *,
                        seed: int = 0,
                        num_train: int = 160,
                        num_val: int = 32,
                        img_size: Tuple[int, int] = (128, 256),
                        max_objects: int = 3) -> str:
    """Writes the toy Cityscapes dataset into ``root``.

    Each ``(height, width)`` image is 'road' with a cue bar ('wall')
    along its left or right edge and gray blobs in the other half. The blobs
    are 'car' next to a red cue, 'truck' next to a green one and 'bus' next
    to a blue one: a pixel's class is read from the far-away cue.

    Args:
        root (str): Directory to write (``leftImg8bit/``, ``gtFine/``).
        seed (int): Seed of the generator. Default: 0.
        num_train (int): Training images. Default: 160.
        num_val (int): Validation images. Default: 32.
        img_size (tuple[int, int]): ``(height, width)``. Default:
            ``(128, 256)``, Cityscapes' 1:2 aspect.
        max_objects (int): Most blobs in one image. Default: 3.

    Returns:
        str: ``root``.
    """
    rng = np.random.default_rng(seed)
    height, width = _size(img_size)
    to_label_ids = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in CITYSCAPES_LABEL_IDS.items():
        to_label_ids[train_id] = label_id
    for split, count, city in (('train', num_train, 'toyville'),
                               ('val', num_val, 'toyburg')):
        for index in range(count):
            img, colour_index, (x0, x1), polygons = _draw_scene(
                rng, height, width, max_objects,
                (height * 0.12, height * 0.3))
            label = np.full((height, width), CITYSCAPES_TRAIN_IDS['road'],
                            dtype=np.uint8)
            label[:, x0:x1] = CITYSCAPES_TRAIN_IDS['wall']
            blob_id = CITYSCAPES_TRAIN_IDS[SEG_BLOB_CLASSES[colour_index]]
            for polygon in polygons:
                _fill(label, polygon, blob_id)
            name = f'{city}_{index:06d}_000019'
            _write_png(
                osp.join(root, 'leftImg8bit', split, city,
                         f'{name}_leftImg8bit.png'), img)
            gt_dir = osp.join(root, 'gtFine', split, city)
            _write_png(
                osp.join(gt_dir, f'{name}_gtFine_labelTrainIds.png'), label)
            _write_png(
                osp.join(gt_dir, f'{name}_gtFine_labelIds.png'),
                to_label_ids[label])
    return root


_MAKERS = {
    'coco': make_toy_coco,
    'coco_matching': make_toy_coco_matching,
    'cityscapes': make_toy_cityscapes
}


def _normalise(options: Dict) -> Dict:
    """Options as JSON stores them (tuples become lists)."""
    return json.loads(json.dumps(options, sort_keys=True))


def ensure_toy_dataset(kind: str, data_root: str, **options) -> bool:
    """Builds a toy dataset into ``data_root`` unless it is there already.

    The dataset is written into a temporary sibling directory and renamed
    into place, so concurrent callers (one per process under ``torchrun``)
    never read a half-written dataset; the loser of the race discards its
    copy, which is identical.

    Args:
        kind (str): One of :data:`KINDS`: ``'coco'``, ``'coco_matching'``
            (:func:`~.toy_matching.make_toy_coco_matching`) or
            ``'cityscapes'``.
        data_root (str): Where the dataset lives.
        **options: The generator's options (``seed``, ``num_train``, ...).

    Returns:
        bool: True if this call built the dataset.

    Raises:
        ValueError: For an unknown ``kind``, or when ``data_root`` holds a
            toy dataset built with other options.
    """
    if kind not in _MAKERS:
        raise ValueError(f'toy dataset kind must be one of {KINDS}, got '
                         f'{kind!r}')
    root = osp.normpath(data_root)
    wanted = _normalise(dict(kind=kind, **options))
    marker = osp.join(root, MARKER)
    if osp.isfile(marker):
        with open(marker) as f:
            found = json.load(f)
        if found != wanted:
            raise ValueError(
                f'{root} holds a toy dataset built with {found}, but the '
                f'config asks for {wanted}; delete {root} to rebuild it')
        return False
    if osp.exists(root) and os.listdir(root):
        raise ValueError(
            f'{root} exists but is not a complete toy dataset (no {MARKER}); '
            'delete it to let the toy dataset be built there')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = osp.join(parent, f'.{osp.basename(root)}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    _MAKERS[kind](tmp, **options)
    with open(osp.join(tmp, MARKER), 'w') as f:
        json.dump(wanted, f, sort_keys=True)
    if osp.isdir(root) and not os.listdir(root):
        os.rmdir(root)
    try:
        os.rename(tmp, root)
    except OSError:
        if not osp.isfile(marker):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process was first
        return False
    return True
