"""Grid files: the rows of one ablation table, as data.

A grid file is an mmengine config (``configs/ablations/*.py``)::

    title = 'GCNet (arXiv 1904.11492) Table 2, COCO Mask R-CNN R50-FPN 1x'
    scale = 100.  # measured metric x scale = the published unit (AP in %)
    metrics = dict(bbox_AP='coco/bbox_mAP', mask_AP='coco/segm_mAP')
    input_shape = (800, 1333)  # (H, W) at which FLOPs are counted
    rows = [
        dict(name='gc-r16-c3-c5',
             group='(a) block design',
             config='../mmdet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py',
             overrides=dict(model=dict(backbone=dict(norm_eval=False))),
             published=dict(bbox_AP=39.4, mask_AP=35.7,
                            source='github.com/xvjiarui/GCNet README.md'),
             note='one line'),
    ]

* ``metrics`` maps a column to a key of the test metrics (what mmengine's
  evaluator returns, e.g. ``coco/bbox_mAP`` or mmseg's ``mIoU``).
* ``config`` is relative to the grid file. ``overrides`` is merged into it
  as a child config would be (mmengine's rules: dicts merge, lists replace,
  ``_delete_=True`` replaces a dict).
* ``published`` holds the paper's numbers in the columns' names plus
  ``source``, where they were read. ``dict(source=..., verified=False)``
  says the source has a number that could not be read: the table shows
  "not verified", never a number. ``None``: no published number (toy data,
  or a table that reports another metric; ``note`` says which).
* Top-level names starting with ``_`` are the file's own helper variables.
"""
from __future__ import annotations

import os.path as osp
import pprint
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

GRID_KEYS = ('title', 'scale', 'metrics', 'input_shape', 'rows')
ROW_KEYS = ('name', 'config', 'group', 'overrides', 'published', 'note')
NAME = re.compile(r'^[A-Za-z0-9_.+-]+$')
# What a plain list of configs is measured with, by codebase.
DEFAULT_METRICS = {
    'mmdet': (100., {
        'bbox_AP': 'coco/bbox_mAP',
        'mask_AP': 'coco/segm_mAP'
    }),
    'mmseg': (1., {
        'mIoU': 'mIoU'
    }),
}
DEFAULT_SHAPES = {'mmdet': (800, 1333), 'mmseg': (512, 1024)}


@dataclass(frozen=True)
class Row:
    """One row of a grid: a base config, overrides, published numbers.

    Args:
        name (str): Unique in its grid; names the work dir.
        config (str): Absolute path of the base config.
        group (str): Sub-table the row belongs to, or ``''``.
        overrides (dict): Merged into the base config.
        published (dict, optional): Published numbers and ``source``.
        note (str): One line shown with the row.
    """
    name: str
    config: str
    group: str = ''
    overrides: Dict[str, Any] = field(default_factory=dict)
    published: Optional[Dict[str, Any]] = None
    note: str = ''

    @property
    def verified(self) -> bool:
        """Whether the published numbers were read from their source."""
        return bool(self.published) and self.published.get('verified', True)

    def published_value(self, column: str) -> Optional[float]:
        """The published number of ``column``, or None."""
        if not self.verified:
            return None
        return self.published.get(column)


@dataclass
class Grid:
    """A whole grid file.

    Args:
        path (str): The grid file, or ``''`` for a list of configs.
        title (str): What the table reproduces.
        scale (float): Measured metric times ``scale`` is in the published
            unit.
        metrics (dict[str, str]): Column name -> test-metric key.
        input_shape (tuple[int, int]): (H, W) at which FLOPs are counted.
        rows (list[Row]): The rows, in order.
    """
    path: str
    title: str
    scale: float
    metrics: Dict[str, str]
    input_shape: Tuple[int, int]
    rows: List[Row]

    def row(self, name: str) -> Row:
        """The row called ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise ValueError(f'no row {name!r} in {self.path or "the configs"}; '
                         f'rows: {[r.name for r in self.rows]}')


# helper functions


def plain(value: Any) -> Any:
    """``value`` with every ConfigDict turned into a dict (recursively)."""
    if isinstance(value, (dict, ConfigDict)):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def _codebase(config: str) -> str:
    scope = Config.fromfile(config).get('default_scope')
    if scope not in DEFAULT_METRICS:
        raise ValueError(f'{config}: default_scope must be one of '
                         f"{tuple(DEFAULT_METRICS)}, got {scope!r}")
    return scope


def _check_published(where: str, published: Any,
                     metrics: Dict[str, str]) -> Optional[Dict[str, Any]]:
    if published is None:
        return None
    if not isinstance(published, dict):
        raise TypeError(f'{where}: published must be a dict or None, got '
                        f'{published!r}')
    allowed = ('source', 'verified', *metrics)
    unknown = sorted(set(published) - set(allowed))
    if unknown:
        raise ValueError(f'{where}: published has unknown keys {unknown}; '
                         f'allowed: {allowed}')
    source = published.get('source')
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f'{where}: published needs a source (where the '
                         'number was read), got ' + repr(source))
    verified = published.get('verified', True)
    if not isinstance(verified, bool):
        raise TypeError(f'{where}: published verified must be a bool, got '
                        f'{verified!r}')
    numbers = {k: v for k, v in published.items() if k in metrics}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f'{where}: published {key} must be a number, '
                            f'got {value!r}')
    if verified and not numbers:
        raise ValueError(f'{where}: published has no number for any of '
                         f'{tuple(metrics)}; give them, or verified=False')
    if not verified and numbers:
        raise ValueError(f'{where}: published is not verified but has '
                         f'numbers {numbers}; an unread number is never '
                         'shown, so leave it out')
    return dict(published)


def _check_row(where: str, entry: Any, root: str,
               metrics: Dict[str, str]) -> Row:
    if not isinstance(entry, dict):
        raise TypeError(f'{where} must be a dict with keys {ROW_KEYS}, got '
                        f'{entry!r}')
    unknown = sorted(set(entry) - set(ROW_KEYS))
    if unknown:
        raise ValueError(f'{where} has unknown keys {unknown}; allowed: '
                         f'{ROW_KEYS}')
    name = entry.get('name')
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{where}['name'] must be a string of letters, "
                         f'digits and _.+-, got {name!r}')
    config = entry.get('config')
    if not isinstance(config, str):
        raise TypeError(f"{where} ({name}): 'config' must be a path, got "
                        f'{config!r}')
    path = osp.normpath(osp.join(root, config))
    if not osp.isfile(path):
        raise ValueError(f'{where} ({name}): config {path} does not exist')
    overrides = entry.get('overrides') or {}
    if not isinstance(overrides, dict):
        raise TypeError(f"{where} ({name}): 'overrides' must be a dict, got "
                        f'{overrides!r}')
    for key in ('group', 'note'):
        if not isinstance(entry.get(key, ''), str):
            raise TypeError(f"{where} ({name}): '{key}' must be a string")
    return Row(
        name=name,
        config=path,
        group=entry.get('group', ''),
        overrides=overrides,
        published=_check_published(f'{where} ({name})',
                                   entry.get('published'), metrics),
        note=entry.get('note', ''))


def _check_metrics(where: str, metrics: Any) -> Dict[str, str]:
    if (not isinstance(metrics, dict) or not metrics or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in metrics.items())):
        raise TypeError(f'{where}: metrics must be a non-empty dict of '
                        f'column name -> metric key, got {metrics!r}')
    return dict(metrics)


def _check_shape(where: str, shape: Any) -> Tuple[int, int]:
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f'{where}: input_shape must be (H, W), two positive '
                         f'ints, got {shape!r}')
    return tuple(shape)


# main functions


def load_grid(path: str) -> Grid:
    """Reads and checks a grid file.

    Args:
        path (str): The grid file.

    Returns:
        Grid: Its rows, with config paths made absolute.

    Raises:
        ValueError, TypeError: A key, row or published number breaks the
            format in this module's docstring; the message names it.
    """
    path = osp.abspath(path)
    cfg = plain(Config.fromfile(path).to_dict())
    unknown = sorted(k for k in set(cfg) - set(GRID_KEYS)
                     if not k.startswith('_'))
    if unknown:
        raise ValueError(f'{path}: unknown keys {unknown}; a grid has '
                         f'{GRID_KEYS} (helper variables start with _)')
    for key in ('title', 'metrics', 'rows'):
        if key not in cfg:
            raise ValueError(f'{path}: a grid needs {key!r}')
    metrics = _check_metrics(path, cfg['metrics'])
    rows = cfg['rows']
    if not isinstance(rows, list) or not rows:
        raise TypeError(f'{path}: rows must be a non-empty list of dicts')
    root = osp.dirname(path)
    checked = [
        _check_row(f'{path}: rows[{i}]', entry, root, metrics)
        for i, entry in enumerate(rows)
    ]
    names = [row.name for row in checked]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f'{path}: row names must be unique; twice: {twice}')
    scale = cfg.get('scale', 1.)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f'{path}: scale must be a number, got {scale!r}')
    shape = cfg.get('input_shape')
    if shape is None:
        shape = DEFAULT_SHAPES[_codebase(checked[0].config)]
    return Grid(
        path=path,
        title=str(cfg['title']),
        scale=float(scale),
        metrics=metrics,
        input_shape=_check_shape(path, shape),
        rows=checked)


def grid_from_configs(configs: Sequence[str]) -> Grid:
    """A grid of plain configs: one row each, named after its file.

    The metrics are the codebase's usual ones: box and mask AP (COCO, in %)
    for mmdet, mIoU for mmseg; a config without a mask head shows n/a.

    Args:
        configs (Sequence[str]): Config files of one codebase.

    Returns:
        Grid: Rows without overrides or published numbers.
    """
    paths = [osp.abspath(c) for c in configs]
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise ValueError(f'configs not found: {missing}')
    codebases = {_codebase(p) for p in paths}
    if len(codebases) != 1:
        raise ValueError('the configs of one ablation must share a codebase '
                         f'(mmdet or mmseg), got {sorted(codebases)}')
    codebase = codebases.pop()
    names = [osp.splitext(osp.basename(p))[0] for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f'two configs have one file name: {names}')
    scale, metrics = DEFAULT_METRICS[codebase]
    return Grid(
        path='',
        title='configs: ' + ', '.join(names),
        scale=scale,
        metrics=dict(metrics),
        input_shape=DEFAULT_SHAPES[codebase],
        rows=[Row(name=n, config=p) for n, p in zip(names, paths)])


def row_config_text(row: Row, grid_path: str = '') -> str:
    """The child config that trains ``row``: its base plus its overrides.

    Args:
        row (Row): The row.
        grid_path (str): Its grid file, named in the header comment.

    Returns:
        str: Python source of an mmengine config.
    """
    origin = f' of {grid_path}' if grid_path else ''
    lines = [
        f'# Row {row.name!r}{origin}, written by tools/ablate.py.',
        f'_base_ = [{row.config!r}]',
    ]
    for key, value in plain(row.overrides).items():
        text = pprint.pformat(value, width=72, sort_dicts=False)
        lines.append(f'{key} = {text}')
    return '\n'.join(lines) + '\n'


def row_config(row: Row) -> Config:
    """``row``'s config as the trainer reads it (base merged with overrides).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, f'{row.name}.py')
        with open(path, 'w') as f:
            f.write(row_config_text(row))
        return Config.fromfile(path)
