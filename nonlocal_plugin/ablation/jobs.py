"""Rows x seeds as jobs: a work dir, a config file and the commands.

Layout under ``--work-root`` (default ``work_dirs/ablations/<grid>``)::

    <row>/seed<S>/config.py      the row's config (base + overrides)
    <row>/seed<S>/...            training output (checkpoints, logs)
    <row>/seed<S>/train.json     written when training ended well
    <row>/seed<S>/test/          the test run's logs
    <row>/seed<S>/result.json    written when the test ended well

A job with ``result.json`` is finished and skipped; one with a checkpoint
but no ``train.json`` was interrupted and resumes (``--resume``); one with
``train.json`` only is tested.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .grid import Grid, Row, row_config_text

TOOLS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))), 'tools')
STATES = ('new', 'interrupted', 'trained', 'finished')


@dataclass
class Job:
    """One row trained and tested with one seed.

    Args:
        row (Row): The grid row.
        seed (int): ``randomness.seed`` of the run.
        work_dir (str): The job's work dir.
        cfg_options (list[str]): ``KEY=VALUE`` overrides for every row.
    """
    row: Row
    seed: int
    work_dir: str
    cfg_options: Sequence[str] = ()

    @property
    def label(self) -> str:
        return f'{self.row.name} seed {self.seed}'

    @property
    def config(self) -> str:
        return osp.join(self.work_dir, 'config.py')

    def path(self, name: str) -> str:
        return osp.join(self.work_dir, name)

    def options(self) -> List[str]:
        return ['--cfg-options', f'randomness.seed={self.seed}',
                *self.cfg_options]

    def state(self) -> str:
        """One of :data:`STATES`, read from the work dir."""
        if osp.isfile(self.path('result.json')):
            return 'finished'
        if osp.isfile(self.path('train.json')):
            return 'trained'
        if osp.isfile(self.path('last_checkpoint')):
            return 'interrupted'
        return 'new'

    def checkpoint(self) -> Optional[str]:
        """The last checkpoint the training wrote, if any."""
        try:
            with open(self.path('last_checkpoint')) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def write_config(self, grid_path: str) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        text = row_config_text(self.row, grid_path)
        with open(self.config, 'w') as f:
            f.write(text)

    def train_command(self, python: str, launcher: str = 'none',
                      gpus: int = 1) -> List[str]:
        """The command that trains (or resumes) this job."""
        resume = ['--resume'] if self.state() == 'interrupted' else []
        if launcher == 'pytorch':
            head = ['bash', osp.join(TOOLS, 'dist_train.sh'), self.config,
                    str(gpus)]
        else:
            head = [python, osp.join(TOOLS, 'train.py'), self.config]
            if launcher == 'slurm':
                head += ['--launcher', 'slurm']
        return head + ['--work-dir', self.work_dir, *resume, *self.options()]

    def test_command(self, python: str, launcher: str = 'none',
                     gpus: int = 1, checkpoint: Optional[str] = None
                     ) -> List[str]:
        """The command that tests the job's last checkpoint.

        Without ``checkpoint`` the command reads ``last_checkpoint`` when it
        runs (a shell substitution), as printed by ``--dry-run``.
        """
        ckpt = checkpoint or f'$(cat {self.path("last_checkpoint")})'
        if launcher == 'pytorch':
            head = ['bash', osp.join(TOOLS, 'dist_test.sh'), self.config,
                    ckpt, str(gpus)]
        else:
            head = [python, osp.join(TOOLS, 'test.py'), self.config, ckpt]
            if launcher == 'slurm':
                head += ['--launcher', 'slurm']
        return head + ['--work-dir', self.path('test'), *self.options()]

    def read_json(self, name: str) -> Optional[Dict]:
        try:
            with open(self.path(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def write_json(self, name: str, data: Dict) -> None:
        tmp = self.path(f'.{name}.tmp')
        with open(tmp, 'w') as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path(name))


def shell(command: Sequence[str]) -> str:
    """``command`` as one shell line run from the current directory: paths
    under it are made relative, a ``$(cat ...)`` stays a substitution."""
    here = os.getcwd() + os.sep
    parts = []
    for part in command:
        part = part.replace(here, '')
        if part.startswith('$(') and part.endswith(')'):
            parts.append(f'"{part}"')
        else:
            parts.append(shlex.quote(part))
    return ' '.join(parts)


def default_work_root(grid: Grid) -> str:
    name = (osp.splitext(osp.basename(grid.path))[0]
            if grid.path else 'configs')
    return osp.join('work_dirs', 'ablations', name)


def make_jobs(grid: Grid, seeds: Sequence[int], work_root: str,
              cfg_options: Sequence[str] = (),
              rows: Optional[Sequence[str]] = None) -> List[Job]:
    """The jobs of ``grid``: every (selected) row with every seed.

    Args:
        grid (Grid): The grid.
        seeds (Sequence[int]): Seeds, e.g. ``(0, 1)``.
        work_root (str): Where the jobs' work dirs go.
        cfg_options (Sequence[str]): ``KEY=VALUE`` for every row.
        rows (Sequence[str], optional): Only these rows (by name).

    Returns:
        list[Job]: Row-major: a row's seeds one after another.
    """
    if not seeds:
        raise ValueError('--seeds needs at least one seed')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds has a seed twice: {list(seeds)}')
    selected = grid.rows
    if rows:
        selected = [grid.row(name) for name in rows]
    root = osp.abspath(work_root)
    return [
        Job(row, seed, osp.join(root, row.name, f'seed{seed}'),
            tuple(cfg_options)) for row in selected for seed in seeds
    ]
