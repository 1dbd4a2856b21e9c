"""Checks of the data files themselves, before a run starts.

:func:`~.checks.check_data` makes sure the data folders and annotation
files exist; :func:`check_data_files` then reads what a dataset lists and
raises :class:`~.checks.SetupError` with one message for:

* a COCO annotation file (any ``*CocoDataset``) that is not valid JSON (a
  truncated download), lacks ``images`` or ``categories``, or has
  annotations whose ``image_id`` no image has;
* images that the annotation file lists but that are not on disk;
* an mmseg dataset whose label map is missing or differs in size from its
  image (read from the file headers, no decoding).

Without these, mmdet fails inside pycocotools with a traceback, drops
orphan annotations silently, and a missing image or a mis-sized label
stops the run in a dataloader worker, possibly hours in.
"""
from __future__ import annotations

import json
import os.path as osp
from importlib import import_module
from typing import Iterator, List, Sequence, Tuple

from mmengine.config import Config
from mmengine.registry import DefaultScope

from .checks import SetupError, _dataset_cfgs, _is_local, _join

SHOWN = 3  # examples named in a message

# helper functions


def _datasets(cfg: Config, loaders: Sequence[str]) -> Iterator[Tuple[str,
                                                                      dict]]:
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for dataset in _dataset_cfgs(loader_cfg.get('dataset')):
            if _is_local(dataset):
                yield loader, dataset


def _type_name(dataset: dict) -> str:
    return str(dataset.get('type', '')).split('.')[-1]


def _examples(items: List[str]) -> str:
    shown = ', '.join(repr(item) for item in items[:SHOWN])
    return shown + (', ...' if len(items) > SHOWN else '')


def load_coco_json(path: str, where: str) -> dict:
    """The parsed annotation file, or a :class:`SetupError` saying why not.
    """
    try:
        with open(path, 'rb') as f:
            text = f.read()
        coco = json.loads(text)
    except json.JSONDecodeError as err:
        ends = text.rstrip()[-1:]
        truncated = ('' if ends in (b'}', b']') else
                     ' It does not end with a closing bracket: the file '
                     'looks truncated (an interrupted download or copy).')
        raise SetupError(
            f'annotation file {path!r} ({where}) is not valid JSON: '
            f'{err.msg} (line {err.lineno}, column {err.colno}, of '
            f'{len(text)} bytes).{truncated} Download or generate it again'
        ) from None
    except UnicodeDecodeError as err:
        raise SetupError(f'annotation file {path!r} ({where}) is not UTF-8 '
                         f'text: {err}') from None
    if not isinstance(coco, dict):
        raise SetupError(f'annotation file {path!r} ({where}) holds a '
                         f'{type(coco).__name__}, not a COCO dict with '
                         "'images', 'annotations' and 'categories'")
    missing = [key for key in ('images', 'categories') if key not in coco]
    if missing:
        raise SetupError(
            f'annotation file {path!r} ({where}) has no {missing} (its keys '
            f'are {sorted(coco)}): it is not a COCO instances file')
    return coco


def check_coco(dataset: dict, where: str) -> None:
    """Checks one ``CocoDataset``'s annotation file and image files."""
    root = dataset.get('data_root') or None
    path = _join(root, dataset['ann_file'])
    coco = load_coco_json(path, f'{where}.ann_file')
    image_ids = {image.get('id') for image in coco['images']}
    orphans = [
        ann for ann in coco.get('annotations') or []
        if ann.get('image_id') not in image_ids
    ]
    if orphans:
        shown = [f"annotation {ann.get('id')} -> image_id "
                 f"{ann.get('image_id')}" for ann in orphans[:SHOWN]]
        raise SetupError(
            f'annotation file {path!r} ({where}.ann_file): '
            f"{len(orphans)} of {len(coco.get('annotations'))} annotations "
            f"point at an image id that 'images' does not list "
            f"({'; '.join(shown)}). The file is inconsistent: download or "
            'generate it again')
    prefix = (dataset.get('data_prefix') or {}).get('img', '')
    folder = _join(root, prefix) if prefix else (root or '')
    missing = [
        image.get('file_name', '') for image in coco['images']
        if not osp.isfile(osp.join(folder, image.get('file_name', '')))
    ]
    if missing:
        raise SetupError(
            f'{len(missing)} of the {len(coco["images"])} images listed in '
            f'{path!r} ({where}) are not in {folder!r} '
            f'({where}.data_prefix.img): {_examples(missing)}. Copy the '
            'missing images there, or point data_prefix.img at the folder '
            'that holds them')


def _image_size(path: str) -> Tuple[int, int]:
    from PIL import Image
    with Image.open(path) as image:  # reads the header only
        return image.size  # (width, height)


def seg_pairs(dataset: dict) -> List[Tuple[str, str]]:
    """``(image, label map)`` paths, listed as mmseg lists them."""
    registry = import_module('mmseg.registry').DATASETS
    cfg = dict(dataset, lazy_init=True, pipeline=[])
    cfg.pop('serialize_data', None)
    with DefaultScope.overwrite_default_scope('mmseg'):
        built = registry.build(cfg)
    return [(info['img_path'], info.get('seg_map_path'))
            for info in built.load_data_list()]


def check_seg(dataset: dict, where: str) -> None:
    """Every label map of an mmseg dataset exists and fits its image."""
    pairs = seg_pairs(dataset)
    missing = [label for _, label in pairs
               if label is not None and not osp.isfile(label)]
    if missing:
        raise SetupError(
            f'{len(missing)} of the {len(pairs)} label maps of {where} are '
            f'missing: {_examples(missing)}. For Cityscapes, mmseg\'s '
            'tools/dataset_converters/cityscapes.py writes the '
            '*_labelTrainIds.png files')
    wrong = []
    for image, label in pairs:
        if label is None:
            continue
        image_size, label_size = _image_size(image), _image_size(label)
        if image_size != label_size:
            wrong.append(f'{label} is {label_size[0]}x{label_size[1]}, its '
                         f'image {image} {image_size[0]}x{image_size[1]}')
    if wrong:
        raise SetupError(
            f'{len(wrong)} of the {len(pairs)} label maps of {where} differ '
            f'in size from their images ({"; ".join(wrong[:SHOWN])}). A '
            'label map must have its image\'s size: regenerate the labels, '
            'or check that img_suffix and seg_map_suffix pair the right '
            'files')


# main functions


def check_data_files(cfg: Config, loaders: Sequence[str]) -> None:
    """Reads the data that the named dataloaders will load, as described in
    the module docstring.

    Args:
        cfg (Config): The run's config (after :func:`~.checks.check_data`).
        loaders (Sequence[str]): Dataloader keys.

    Raises:
        SetupError: Naming the file, the option and what to do.
    """
    seen = set()
    scope = cfg.get('default_scope')
    for loader, dataset in _datasets(cfg, loaders):
        key = (_type_name(dataset), dataset.get('data_root'),
               dataset.get('ann_file'), str(dataset.get('data_prefix')))
        if key in seen:
            continue
        seen.add(key)
        where = f'{loader}.dataset'
        if _type_name(dataset).endswith('CocoDataset') and str(
                dataset.get('ann_file', '')).endswith('.json'):
            check_coco(dataset, where)
        elif scope == 'mmseg':
            check_seg(dataset, where)
