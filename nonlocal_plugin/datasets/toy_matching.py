"""A toy COCO task whose long-range context depends on the query.

In the cue task (:mod:`.toy`) one coloured bar decides the class of every
object in the image: the context each object needs is the same, so one
global context vector, pooled once per image, is enough. GCNet (Cao et al.,
"GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
https://arxiv.org/abs/1904.11492) observed that the attention maps a
trained non-local block learns are almost the same for every query
position, and replaced them by one query-independent map; DNL (Yin et al.,
"Disentangled Non-Local Neural Networks",
https://arxiv.org/abs/2006.06668) splits the non-local attention into a
pairwise (query-dependent) term and a unary (query-independent) one, and
argues that the pairwise term is what learns little. A task that a
query-independent context solves cannot tell these blocks apart.

Here it does not suffice. Every image has a *legend strip* along its left or
right edge with three markers, a triangle, a square and a circle, stacked
vertically in random order and filled with red, green and blue in a random
per-image assignment. In the far 40 % of the image on the other side lie 1
to ``max_objects`` gray objects, each a triangle, a square or a circle. An
object's class is the colour of the legend marker *of its own shape*
(``red_match``, ``green_match``, ``blue_match``). So

* the object alone carries no hint of its class (all objects are gray, and
  every shape has every colour equally often);
* no single global colour decides it either (every image shows all three
  colours). A query-independent block can still solve it in principle, by
  pooling the whole assignment (one of 6 permutations) into its context
  vector and leaving the per-object choice to the layers after it; the
  direct route is per-query attention;
* two objects of one image with different shapes need different far-away
  context: each must attend to its own marker, about half the image width
  away. The attention has to depend on the query.

:func:`make_toy_coco_matching` writes the dataset in COCO's format, exactly
as :func:`~.toy.make_toy_coco` does; ``ensure_toy_dataset('coco_matching',
...)`` builds it on first use.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from ._drawing import (
    CUE_COLOURS,
    _background,
    _cue_width,
    _far_range,
    _fill,
    _place_objects,
    _size,
    write_coco,
)

SHAPES = ('triangle', 'square', 'circle')
TOY_COCO_MATCHING_CLASSES = tuple(f'{name}_match' for name in CUE_COLOURS)
_VERTICES = {'triangle': 3, 'square': 4, 'circle': 24}
# Marker vertex angles: triangles point up, squares are axis-aligned.
_MARKER_ANGLES = {'triangle': -np.pi / 2, 'square': np.pi / 4, 'circle': 0.}
MARKER_RADIUS = 0.12  # of the height

# helper functions


def _regular_polygon(shape: str, cx: float, cy: float, radius: float,
                     angle: float) -> np.ndarray:
    """A regular polygon of ``shape`` around ``(cx, cy)``, ``[K, 2]``."""
    num = _VERTICES[shape]
    angles = angle + 2 * np.pi * np.arange(num) / num  # [K]
    return np.stack(
        [cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _random_shape(rng: np.random.Generator, cx: float, cy: float,
                  radius: float) -> Tuple[str, np.ndarray]:
    """A shape drawn from :data:`SHAPES`, randomly rotated, and its polygon.
    """
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    num = _VERTICES[shape]
    angle = 0. if shape == 'circle' else rng.uniform(0, 2 * np.pi / num)
    return shape, _regular_polygon(shape, cx, cy, radius, angle)


def _draw_matching_scene(
    rng: np.random.Generator, height: int, width: int, max_objects: int,
    radius_range: Tuple[float, float]
) -> Tuple[np.ndarray, Dict[str, Tuple[int, Tuple[float, float]]], List[Tuple[
        str, np.ndarray]]]:
    """One matching image: background, legend strip, gray shapes far away.

    Args:
        rng (numpy.random.Generator): The generator.
        height (int): Image height.
        width (int): Image width.
        max_objects (int): Most objects in the image.
        radius_range (tuple[float, float]): Object radius range, in pixels.

    Returns:
        tuple: The ``[H, W, 3]`` BGR image; the legend, a dict from each
        shape to the index of its colour in :data:`CUE_COLOURS` and its
        marker's centre ``(x, y)``; and the objects, ``(shape, polygon)``
        pairs. An object's category index is its shape's colour index.
    """
    colours = list(CUE_COLOURS.values())
    colour_of = rng.permutation(len(colours))  # shape i -> colour
    side = 'left' if rng.random() < 0.5 else 'right'
    img = _background(rng, height, width)
    strip = _cue_width(width)
    x0 = 0 if side == 'left' else width - strip
    cell = height / len(SHAPES)
    legend = {}
    for row, shape_index in enumerate(rng.permutation(len(SHAPES))):
        shape = SHAPES[shape_index]
        cx = x0 + strip / 2 + rng.uniform(-0.1, 0.1) * strip
        cy = (row + 0.5) * cell + rng.uniform(-0.03, 0.03) * height
        colour_index = int(colour_of[shape_index])
        _fill(img,
              _regular_polygon(shape, cx, cy, MARKER_RADIUS * height,
                               _MARKER_ANGLES[shape]),
              colours[colour_index][::-1])  # BGR
        legend[shape] = (colour_index, (float(cx), float(cy)))
    objects = _place_objects(rng, int(rng.integers(1, max_objects + 1)),
                             _far_range(side, width, 2), (2, height - 2),
                             radius_range, _random_shape)
    for _, polygon in objects:
        gray = int(rng.integers(150, 215))
        _fill(img, polygon, (gray, gray, gray))
    return img, legend, objects


# main function


def make_toy_coco_matching(root: str,
                           *,
                           seed: int = 0,
                           num_train: int = 320,
                           num_val: int = 64,
                           img_size: Union[int, Sequence[int]] = (96, 256),
                           max_objects: int = 3) -> str:
    """Writes the toy COCO matching dataset into ``root``.

    Each image has a legend strip (a red, a green and a blue marker, one
    triangle, one square and one circle, in a random per-image assignment)
    along its left or right edge and 1 to ``max_objects`` gray triangles,
    squares and circles in the other half. Every object's category is
    ``'<colour>_match'``: the colour of the legend marker with its shape.

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
        img, legend, objects = _draw_matching_scene(
            rng, height, width, max_objects, (height * 0.1, height * 0.2))
        return img, [(legend[shape][0], polygon)
                     for shape, polygon in objects]

    return write_coco(
        root,
        draw,
        classes=TOY_COCO_MATCHING_CLASSES,
        description='nonlocal_plugin toy COCO matching: an object\'s class '
        'is the colour of the far-away legend marker of the same shape',
        num_train=num_train,
        num_val=num_val,
        height=height,
        width=width)
