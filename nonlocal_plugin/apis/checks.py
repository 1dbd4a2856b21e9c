"""Checks run before a Runner is built, so bad input fails in one message.

Without them a config pointed at missing data fails deep inside a
dataloader worker, and an unreachable pretrained checkpoint fails inside
``urllib`` halfway through building the model. These functions look first
and raise :class:`SetupError` with one message that names the path or URL
and says what to do; the command-line tools turn it into a plain exit.

* :func:`prepare_toy_data` builds a toy config's dataset on first use.
* :func:`check_data` checks that the datasets and annotation files of the
  dataloaders (and evaluators) a run uses exist.
* :func:`check_checkpoints` checks that every pretrained checkpoint in the
  model (``init_cfg=dict(type='Pretrained', ...)``, ``pretrained=...``) and
  ``load_from`` is a local file, already downloaded, or downloadable now.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import socket
from typing import Any, Iterator, List, Tuple
from urllib.parse import urlparse

import mmengine
import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..datasets.toy import ensure_toy_dataset

# Where to read how to get each dataset, by the config's dataset type.
DATASET_DOCS = {
    'CocoDataset': (
        'COCO 2017', 'https://mmdetection.readthedocs.io/en/latest/'
        'user_guides/dataset_prepare.html'),
    'CityscapesDataset': (
        'Cityscapes (leftImg8bit + gtFine, then mmseg\'s '
        'tools/dataset_converters/cityscapes.py for the *_labelTrainIds.png '
        'files)', 'https://mmsegmentation.readthedocs.io/en/latest/'
        'user_guides/2_dataset_prepare.html#cityscapes'),
}
TOY_CONFIGS = {
    'mmdet': 'configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py',
    'mmseg': 'configs/toy/fcn_r18-d8-nl_toy-cityscapes.py',
}
URL_SCHEMES = ('http://', 'https://')
REMOTE_SCHEMES = ('torchvision://', 'modelzoo://', 'open-mmlab://',
                  'openmmlab://', 'mmcls://')
REMOTE_STORAGE = re.compile(r'^(\S+:)?(s3|petrel|pavi)://')


class SetupError(RuntimeError):
    """A run cannot start; the message says why and what to do."""


# helper functions


def _dataset_cfgs(dataset: Any) -> Iterator[dict]:
    """The leaf dataset configs, looking inside wrapper datasets."""
    if not isinstance(dataset, dict):
        return
    inner = [dataset['dataset']] if 'dataset' in dataset else []
    inner += list(dataset.get('datasets', []) or [])
    if inner:
        for sub in inner:
            yield from _dataset_cfgs(sub)
    else:
        yield dataset


def _is_local(dataset: dict) -> bool:
    backend_args = dataset.get('backend_args') or {}
    return backend_args.get('backend', 'local') == 'local'


def _join(root: str | None, path: str) -> str:
    if root and not osp.isabs(path):
        return osp.join(root, path)
    return path


def _needed_paths(dataset: dict) -> List[Tuple[str, str]]:
    """``(option, path)`` of the data root, annotation file and folders."""
    root = dataset.get('data_root') or None
    paths = []
    if root:
        paths.append(('data_root', root))
    if dataset.get('ann_file'):
        paths.append(('ann_file', _join(root, dataset['ann_file'])))
    prefix = dataset.get('data_prefix') or {}
    for key, value in prefix.items():
        if isinstance(value, str) and value:
            paths.append((f'data_prefix.{key}', _join(root, value)))
    return paths


def _toy_hint(scope: str | None) -> str:
    """Which toy config to try instead, for the config's library."""
    toy = TOY_CONFIGS.get(scope, TOY_CONFIGS['mmdet'])
    return ('To try the tools without any download, train a toy config '
            f'instead, e.g. python tools/train.py {toy}')


def _missing_data_message(loader: str, option: str, path: str,
                          dataset: dict, scope: str | None) -> str:
    kind, docs = DATASET_DOCS.get(
        str(dataset.get('type', '')).split('.')[-1],
        ('the dataset', 'the dataset preparation guide of mmdet or mmseg'))
    where = f'{loader}.dataset.{option}'
    return (f'dataset not found: {path!r} ({where}, relative to '
            f'{os.getcwd()}) does not exist. Download {kind} and put or '
            f'symlink it there, as {docs} describes, or point the config '
            f'at it with --cfg-options {loader}.dataset.data_root=/path/to/'
            f'data/ (and likewise for the other dataloaders and the '
            f"evaluators' ann_file). {_toy_hint(scope)}")


def _pretrained_entries(node: Any, where: str) -> Iterator[Tuple[str, str]]:
    """``(config key, checkpoint)`` of every pretrained weight in a model."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(
                node.get('checkpoint'), str):
            yield f'{where}.checkpoint', node['checkpoint']
        pretrained = node.get('pretrained')
        if isinstance(pretrained, str):
            yield f'{where}.pretrained', pretrained
        for key, value in node.items():
            yield from _pretrained_entries(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_entries(value, f'{where}[{i}]')


def _hub_json(name: str) -> dict:
    with open(osp.join(mmengine.__path__[0], 'hub', name)) as f:
        return json.load(f)


def _torchvision_urls() -> dict | None:
    """mmengine's ``torchvision://`` table, or None without torchvision."""
    try:
        from mmengine.runner.checkpoint import get_torchvision_models
        return get_torchvision_models()
    except ImportError:
        return None


def resolve_checkpoint(checkpoint: str) -> str:
    """The URL or path that mmengine loads for ``checkpoint``.

    Args:
        checkpoint (str): A path, a URL, or a name with one of mmengine's
            schemes (``torchvision://``, ``open-mmlab://``, ``mmcls://``).

    Returns:
        str: An ``http(s)://`` URL or a local path.

    Raises:
        SetupError: If the name is not in mmengine's tables.
    """
    scheme, _, name = checkpoint.partition('://')
    if scheme in ('torchvision', 'modelzoo'):
        # mmengine keeps the pre-0.13 torchvision names in this json and
        # only adds the new-style names from torchvision itself.
        urls = _torchvision_urls() or _hub_json('torchvision_0.12.json')
    elif scheme in ('open-mmlab', 'openmmlab'):
        from mmengine.runner.checkpoint import (
            _get_mmengine_home,
            get_deprecated_model_names,
            get_external_models,
        )
        urls = get_external_models()
        name = get_deprecated_model_names().get(name, name)
        if name in urls and not urls[name].startswith(URL_SCHEMES):
            return osp.join(_get_mmengine_home(), urls[name])
    elif scheme == 'mmcls':
        urls = _hub_json('mmcls.json')
    else:
        return checkpoint
    if name not in urls:
        raise SetupError(f'unknown pretrained checkpoint {checkpoint!r}: '
                         f'{name!r} is not in mmengine\'s {scheme}:// table')
    return urls[name]


def cached_path(url: str) -> str:
    """Where mmengine's ``load_url`` keeps the download of ``url``."""
    return osp.join(torch.hub.get_dir(), 'checkpoints',
                    osp.basename(urlparse(url).path))


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """None if ``url``'s host accepts a connection, else the reason."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == 'https' else 80)
    try:
        with socket.create_connection((parsed.hostname, port),
                                      timeout=timeout):
            return None
    except OSError as err:
        return f'{type(err).__name__}: {err}'


def _check_one_checkpoint(key: str, checkpoint: str, what: str,
                          fix: str) -> None:
    if REMOTE_STORAGE.match(checkpoint):
        return  # object storage: this check does not know how to reach it
    target = resolve_checkpoint(checkpoint)
    if not target.startswith(URL_SCHEMES):
        if not osp.isfile(target):
            raise SetupError(f'{what} not found: {target!r} ({key}) is not '
                             f'a file. {fix}')
        return
    cache = cached_path(target)
    if osp.isfile(cache):
        return
    reason = reachable(target)
    if reason is not None:
        shown = checkpoint if checkpoint == target else (
            f'{checkpoint} = {target}')
        raise SetupError(
            f'cannot download the {what} {shown} ({key}): '
            f'{urlparse(target).hostname} is unreachable ({reason}). '
            f'Download it on a machine with internet access and copy it to '
            f'{cache}, or {fix}')


# main functions


def prepare_toy_data(cfg: Config) -> bool:
    """Builds the toy dataset that a toy config names, if it is missing.

    A toy config has a ``toy_dataset = dict(kind=..., data_root=..., ...)``
    entry; other configs are left alone.

    Args:
        cfg (Config): The run's config.

    Returns:
        bool: True if a dataset was built.
    """
    toy = cfg.get('toy_dataset')
    if not toy:
        return False
    options = dict(toy)
    kind = options.pop('kind', None)
    data_root = options.pop('data_root', None)
    if kind is None or data_root is None:
        raise SetupError("toy_dataset needs 'kind' and 'data_root', got "
                         f'{dict(toy)}')
    try:
        built = ensure_toy_dataset(kind, data_root, **options)
    except (ValueError, TypeError) as err:
        raise SetupError(f'toy dataset: {err}') from None
    if built:
        print_log(f'Built the toy {kind} dataset in {data_root}',
                  logger='current')
    return built


def check_data(cfg: Config, loaders: Tuple[str, ...]) -> None:
    """Checks that the data of the named dataloaders exists on disk.

    Args:
        cfg (Config): The run's config.
        loaders (tuple[str]): Dataloader keys, e.g. ``('train_dataloader',
            'val_dataloader')``; each one's evaluator (``val_evaluator``
            ...) is checked for an ``ann_file`` too.

    Raises:
        SetupError: Naming the first missing path and how to get the data.
    """
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for dataset in _dataset_cfgs(loader_cfg.get('dataset')):
            if not _is_local(dataset):
                continue
            for option, path in _needed_paths(dataset):
                if not osp.exists(path):
                    raise SetupError(
                        _missing_data_message(loader, option, path, dataset,
                                              cfg.get('default_scope')))
        evaluator = cfg.get(loader.replace('_dataloader', '_evaluator'))
        evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
        for metric in evaluators:
            if isinstance(metric, dict) and isinstance(
                    metric.get('ann_file'), str) and not osp.exists(
                        metric['ann_file']):
                raise SetupError(
                    f"annotation file not found: {metric['ann_file']!r} "
                    f"({loader.replace('_dataloader', '_evaluator')}"
                    f'.ann_file, relative to {os.getcwd()}). '
                    f'{_toy_hint(cfg.get("default_scope"))}')


def check_checkpoints(cfg: Config, *, pretrained: bool = True) -> None:
    """Checks that the run's checkpoints can be read or downloaded.

    ``torchvision://`` names are resolved without torchvision when it is
    not installed: the config then gets the URL that mmengine's own table
    gives for the name, with a log line.

    Args:
        cfg (Config): The run's config.
        pretrained (bool): Check the model's pretrained weights too (a
            test run loads a trained checkpoint and does not need them).
            Default: True.

    Raises:
        SetupError: Naming the checkpoint, its URL and what to do.
    """
    if pretrained:  # the Runner inits the weights even when resuming
        if _torchvision_urls() is None:
            _resolve_torchvision_in_place(cfg.get('model'))
        for key, checkpoint in _pretrained_entries(cfg.get('model'),
                                                   'model'):
            # An init_cfg's checkpoint cannot be None: drop the init_cfg.
            option = (key[:-len('.checkpoint')]
                      if key.endswith('.checkpoint') else key)
            _check_one_checkpoint(
                key, checkpoint, 'pretrained weights',
                f'train from scratch with --cfg-options {option}=None')
    load_from = cfg.get('load_from')
    if isinstance(load_from, str):
        _check_one_checkpoint('load_from', load_from, 'checkpoint',
                              'pass a checkpoint file that exists')


def _resolve_torchvision_in_place(node: Any) -> None:
    """Replaces ``torchvision://`` names by their URLs (no torchvision)."""
    if isinstance(node, dict):
        for key in ('checkpoint', 'pretrained'):
            value = node.get(key)
            if isinstance(value, str) and value.startswith(
                    ('torchvision://', 'modelzoo://')):
                node[key] = resolve_checkpoint(value)
                print_log(
                    f'torchvision is not installed: {value} resolved to '
                    f'{node[key]} through mmengine\'s table',
                    logger='current')
        for value in node.values():
            _resolve_torchvision_in_place(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _resolve_torchvision_in_place(value)
