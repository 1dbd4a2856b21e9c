"""Drawing and COCO-writing helpers shared by the toy datasets.

Private to :mod:`nonlocal_plugin.datasets`: the cue tasks
(:mod:`.toy`) and the matching task (:mod:`.toy_matching`) draw with the
same background, colours and geometry, and write COCO the same way.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Callable, List, Sequence, Tuple, Union

import cv2
import numpy as np

# The cue colours (RGB); the toy classes are named after them.
CUE_COLOURS = {
    'red': (220, 40, 40),
    'green': (40, 200, 60),
    'blue': (50, 80, 230),
}

# The cue covers this fraction of the width on its side, the objects lie in
# this fraction on the other side: 35 % of the width lies between them.
CUE_FRACTION = 0.25
FAR_FRACTION = 0.4

# An image and its objects as (category index, polygon) pairs.
Scene = Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]

# helper functions


def _background(rng: np.random.Generator, height: int,
                width: int) -> np.ndarray:
    """A dim, low-contrast textured background, ``[H, W, 3]`` uint8."""
    base = rng.uniform(50, 90)
    coarse = rng.normal(0, 12, size=(height // 8 + 1, width // 8 + 1, 1))
    coarse = cv2.resize(coarse.astype(np.float32), (width, height),
                        interpolation=cv2.INTER_LINEAR)[..., None]
    fine = rng.normal(0, 6, size=(height, width, 1))
    img = base + coarse + fine  # [H, W, 1]
    return np.clip(np.repeat(img, 3, axis=2), 0, 255).astype(np.uint8)


def _place_objects(rng: np.random.Generator, count: int,
                   x_range: Tuple[float, float], y_range: Tuple[float, float],
                   radius_range: Tuple[float, float],
                   make: Callable[[np.random.Generator, float, float, float],
                                  object]) -> list:
    """Up to ``count`` objects in the given box, not touching each other.

    Args:
        rng (numpy.random.Generator): The generator.
        count (int): Objects wanted.
        x_range (tuple[float, float]): The box's x range.
        y_range (tuple[float, float]): The box's y range.
        radius_range (tuple[float, float]): Radius of an object's circle.
        make (callable): ``make(rng, cx, cy, radius)`` draws one object
            inside the circle (a polygon, or anything holding one).

    Returns:
        list: What ``make`` returned, one per placed object.
    """
    objects, circles = [], []
    # Small images: no object larger than the box it must fit in.
    fits = min(x_range[1] - x_range[0], y_range[1] - y_range[0]) / 2
    high = min(radius_range[1], fits)
    low = min(radius_range[0], high)
    for _ in range(count * 20):
        if len(objects) == count:
            break
        radius = rng.uniform(low, high)
        cx = rng.uniform(x_range[0] + radius, x_range[1] - radius)
        cy = rng.uniform(y_range[0] + radius, y_range[1] - radius)
        if any((cx - x)**2 + (cy - y)**2 < (radius + r + 2)**2
               for x, y, r in circles):
            continue
        circles.append((cx, cy, radius))
        objects.append(make(rng, cx, cy, radius))
    return objects


def _fill(img: np.ndarray, polygon: np.ndarray, value) -> None:
    points = np.round(polygon).astype(np.int32)[None]  # [1, K, 2]
    cv2.fillPoly(img, points, value, lineType=cv2.LINE_8)


def _far_range(side: str, width: int, margin: int) -> Tuple[float, float]:
    """The x range of the objects: the far 40 % of the width from the cue.
    """
    if side == 'left':
        return width * (1 - FAR_FRACTION), width - margin
    return margin, width * FAR_FRACTION


def _size(img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(height, width)`` from an int or a pair."""
    if isinstance(img_size, int):
        return img_size, img_size
    height, width = img_size
    return int(height), int(width)


def _cue_width(width: int) -> int:
    return max(4, round(CUE_FRACTION * width))


def _write_png(path: str, img: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f'could not write {path}')


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    cross = np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))
    return float(0.5 * abs(cross))


def _annotation(ann_id: int, image_id: int, category_index: int,
                polygon: np.ndarray, height: int, width: int) -> dict:
    """One COCO instance annotation of a polygon."""
    polygon = np.clip(polygon, 0, (width - 1, height - 1))
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_index + 1,
        segmentation=[[round(float(v), 2) for v in polygon.flatten()]],
        area=round(_polygon_area(polygon), 2),
        bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        iscrowd=0)


# main function


def write_coco(root: str, draw: Callable[[], Scene], *,
               classes: Sequence[str], description: str, num_train: int,
               num_val: int, height: int, width: int) -> str:
    """Writes a COCO instances dataset of drawn scenes into ``root``.

    Args:
        root (str): Directory to write (``annotations/``, ``train2017/``,
            ``val2017/``). It is created; existing files are overwritten.
        draw (callable): Called once per image, train images first; returns
            the ``[H, W, 3]`` BGR image and its objects as
            ``(category index, polygon)`` pairs.
        classes (Sequence[str]): Category names; category ``i`` gets id
            ``i + 1``.
        description (str): ``info.description`` of the json.
        num_train (int): Training images.
        num_val (int): Validation images.
        height (int): Image height.
        width (int): Image width.

    Returns:
        str: ``root``.
    """
    categories = [
        dict(id=i + 1, name=name, supercategory='toy')
        for i, name in enumerate(classes)
    ]
    ann_id = 1
    for split, count in (('train', num_train), ('val', num_val)):
        images, annotations = [], []
        for index in range(count):
            image_id = index + 1
            img, objects = draw()
            for category_index, polygon in objects:
                annotations.append(
                    _annotation(ann_id, image_id, category_index, polygon,
                                height, width))
                ann_id += 1
            file_name = f'{split}_{image_id:06d}.png'
            _write_png(osp.join(root, f'{split}2017', file_name), img)
            images.append(
                dict(
                    id=image_id,
                    file_name=file_name,
                    width=width,
                    height=height))
        ann_file = osp.join(root, 'annotations', f'instances_{split}2017.json')
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        with open(ann_file, 'w') as f:
            json.dump(
                dict(
                    info=dict(description=description, version='1.0'),
                    licenses=[],
                    images=images,
                    annotations=annotations,
                    categories=categories),
                f,
                sort_keys=True)
    return root
