"""The toy COCO matching task: an object's class is the colour of the
legend marker of its own shape, so its context depends on the object."""
import itertools
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from nonlocal_plugin.datasets import (
    TOY_COCO_MATCHING_CLASSES,
    ensure_toy_dataset,
    make_toy_coco_matching,
)
from nonlocal_plugin.datasets.toy import CUE_COLOURS, KINDS
from nonlocal_plugin.datasets.toy_matching import (
    SHAPES,
    _draw_matching_scene,
)

SMALL = dict(num_train=24, num_val=4, img_size=(96, 256))
HEIGHT, WIDTH = 96, 256
RADII = (HEIGHT * 0.1, HEIGHT * 0.2)

# helper functions


def tree_bytes(root):
    """Every file under ``root``: relative path -> bytes."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


def scenes(count, seed=0):
    rng = np.random.default_rng(seed)
    return [
        _draw_matching_scene(rng, HEIGHT, WIDTH, 3, RADII)
        for _ in range(count)
    ]


def load(root, split='train'):
    with open(osp.join(root, f'annotations/instances_{split}2017.json')) as f:
        return json.load(f)


# tests


def test_is_deterministic(tmp_path):
    first = tree_bytes(
        make_toy_coco_matching(str(tmp_path / 'a'), seed=3, **SMALL))
    again = tree_bytes(
        make_toy_coco_matching(str(tmp_path / 'b'), seed=3, **SMALL))
    other = tree_bytes(
        make_toy_coco_matching(str(tmp_path / 'c'), seed=4, **SMALL))
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_markers_have_their_colour_and_objects_are_gray():
    colours = list(CUE_COLOURS.values())
    for img, legend, objects in scenes(40):
        assert sorted(legend) == sorted(SHAPES)
        assert sorted(c for c, _ in legend.values()) == [0, 1, 2]
        xs = [x for _, (x, _) in legend.values()]
        # The legend lies in one edge strip, the objects far from it.
        left = max(xs) < WIDTH / 2
        assert max(xs) - min(xs) < WIDTH * 0.25
        for shape, (colour_index, (x, y)) in legend.items():
            b, g, r = (int(v) for v in img[round(y), round(x)])
            assert (r, g, b) == colours[colour_index], shape
        for shape, polygon in objects:
            assert shape in SHAPES
            cx, cy = polygon.mean(axis=0)
            gap = cx - max(xs) if left else min(xs) - cx
            assert gap > WIDTH * 0.4
            b, g, r = (int(v) for v in img[round(cy), round(cx)])
            assert b == g == r and 150 <= b < 215


def test_written_category_is_the_colour_of_the_same_shape(tmp_path):
    """The files are the scenes of the internal drawer, and each object's
    category is the colour index of the legend marker of its shape."""
    root = make_toy_coco_matching(str(tmp_path), seed=0, **SMALL)
    coco = load(root)
    names = {c['id']: c['name'] for c in coco['categories']}
    assert tuple(names[i + 1] for i in range(3)) == TOY_COCO_MATCHING_CLASSES
    anns = iter(coco['annotations'])
    for image, (img, legend, objects) in zip(coco['images'],
                                              scenes(SMALL['num_train'])):
        written = cv2.imread(osp.join(root, 'train2017', image['file_name']))
        assert np.array_equal(written, img)
        for shape, polygon in objects:
            ann = next(anns)
            assert ann['image_id'] == image['id']
            assert ann['category_id'] == legend[shape][0] + 1
            x, y, w, h = ann['bbox']
            cx, cy = polygon.mean(axis=0)
            assert x <= cx <= x + w and y <= cy <= y + h
    assert next(anns, None) is None


def test_classes_differ_within_images_and_every_assignment_occurs(tmp_path):
    root = make_toy_coco_matching(str(tmp_path), seed=0, num_train=64,
                                  num_val=2)
    coco = load(root)
    per_image = {}
    for ann in coco['annotations']:
        per_image.setdefault(ann['image_id'], set()).add(ann['category_id'])
    mixed = sum(len(c) >= 2 for c in per_image.values()) / len(per_image)
    assert mixed > 0.3, f'only {mixed:.0%} of images mix classes'
    assert set().union(*per_image.values()) == {1, 2, 3}
    # Every shape -> colour permutation, and every shape of every colour.
    seen = {
        tuple(legend[s][0] for s in SHAPES)
        for _, legend, _ in scenes(64)
    }
    assert seen == set(itertools.permutations(range(3)))


def test_loads_with_pycocotools(tmp_path):
    root = make_toy_coco_matching(str(tmp_path), seed=0, **SMALL)
    for split, count in (('train', 24), ('val', 4)):
        coco = COCO(osp.join(root, f'annotations/instances_{split}2017.json'))
        assert len(coco.getImgIds()) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())
                ] == list(TOY_COCO_MATCHING_CLASSES)
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert coco.annToMask(ann).sum() > 0 and ann['area'] > 0
            assert ann['iscrowd'] == 0
    assert 'legend' in coco.dataset['info']['description']


def test_ensure_builds_matching_and_lists_kinds(tmp_path):
    root = str(tmp_path / 'toy')
    assert 'coco_matching' in KINDS
    assert ensure_toy_dataset('coco_matching', root, seed=0, **SMALL)
    built = tree_bytes(root)
    built.pop('toy_dataset.json')
    assert built == tree_bytes(
        make_toy_coco_matching(str(tmp_path / 'ref'), seed=0, **SMALL))
    with pytest.raises(ValueError) as info:
        ensure_toy_dataset('coco_matchin', str(tmp_path / 'x'))
    for kind in KINDS:
        assert repr(kind) in str(info.value)
