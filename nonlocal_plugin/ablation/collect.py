"""Reading the work dirs back into ``ablation.md`` and ``ablation.csv``.

Per row: the measured metrics (mean ± sample std over the seeds that
finished, in the published unit), the published numbers and their source,
the params of the whole model and of the inserted attention blocks, the
FLOPs at the grid's ``input_shape`` (attention included, as
``tools/get_flops.py`` counts them), the median train step time and the peak
memory. The costs of a row are computed once and kept in
``<row>/costs.json``.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import os.path as osp
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .grid import Grid, Row, row_config_text
from .jobs import Job

NOT_VERIFIED = 'not verified'


@dataclass
class RowResult:
    """What one row measured, over its seeds.

    Args:
        row (Row): The grid row.
        per_seed (dict[int, dict[str, float]]): For each seed with a
            finished job, column -> value in the published unit.
        costs (dict): ``params``, ``block_params``, ``flops`` (or empty).
        step_time (float, optional): Median train step, seconds (the mean
            over seeds of each run's median).
        peak_mem (float, optional): Peak memory, MiB.
        memory_kind (str): ``'cuda'`` (mmengine's max allocated) or
            ``'rss'`` (peak RSS of the train process).
    """
    row: Row
    per_seed: Dict[int, Dict[str, float]] = field(default_factory=dict)
    costs: Dict[str, float] = field(default_factory=dict)
    step_time: Optional[float] = None
    peak_mem: Optional[float] = None
    memory_kind: str = ''

    @property
    def seeds(self) -> List[int]:
        return list(self.per_seed)

    def values(self, column: str) -> List[float]:
        return [v[column] for v in self.per_seed.values() if column in v]

    def mean(self, column: str) -> Optional[float]:
        values = self.values(column)
        return statistics.fmean(values) if values else None

    def std(self, column: str) -> Optional[float]:
        values = self.values(column)
        return statistics.stdev(values) if len(values) > 1 else None


# helper functions


def _train_log(job: Job) -> List[dict]:
    """The training iterations' log lines (mmengine's scalars.json)."""
    lines = []
    pattern = osp.join(job.work_dir, '*', 'vis_data', 'scalars.json')
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return [line for line in lines if 'loss' in line and 'time' in line]


def _job_costs(job: Job, input_shape) -> Dict[str, float]:
    from ..analysis.complexity import complexity  # torch + the codebase
    with tempfile.TemporaryDirectory() as tmp:
        config = osp.join(tmp, f'{job.row.name}.py')
        with open(config, 'w') as f:
            f.write(row_config_text(job.row))
        result = complexity(config, input_shape)
    return dict(
        params=result.params,
        block_params=sum(b.params for b in result.blocks),
        flops=result.flops,
        block_flops=sum(b.flops for b in result.blocks),
        blocks=len(result.blocks),
        input_shape=list(input_shape))


def row_costs(job: Job, input_shape, cache_dir: str) -> Dict[str, float]:
    """Params and FLOPs of a row, cached in ``cache_dir/costs.json``."""
    path = osp.join(cache_dir, 'costs.json')
    if osp.isfile(path):
        with open(path) as f:
            costs = json.load(f)
        if (costs.get('input_shape') == list(input_shape)
                and 'block_flops' in costs):
            return costs
    costs = _job_costs(job, input_shape)
    os.makedirs(cache_dir, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(costs, f, indent=1, sort_keys=True)
    return costs


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def _measured(result: RowResult, column: str) -> str:
    mean, std = result.mean(column), result.std(column)
    if mean is None:
        return 'n/a'
    return _fmt(mean) if std is None else f'{mean:.1f} ± {std:.1f}'


def _published(row: Row, column: str) -> str:
    if row.published is None:
        return '–'
    if not row.verified:
        return NOT_VERIFIED
    return _fmt(row.published_value(column))


def _source(row: Row) -> str:
    if row.published is None:
        return row.note or '–'
    source = row.published['source']
    return source if row.verified else f'{source} ({NOT_VERIFIED})'


# main functions


def collect(grid: Grid, jobs: Sequence[Job], *, costs: bool = True
            ) -> List[RowResult]:
    """Reads every job's results and groups them by row.

    Args:
        grid (Grid): The grid.
        jobs (Sequence[Job]): Its jobs (rows x seeds).
        costs (bool): Also count params and FLOPs (builds each row's
            model once; cached). Default: True.

    Returns:
        list[RowResult]: In the grid's row order, one per row with jobs.
    """
    results: Dict[str, RowResult] = {}
    steps: Dict[str, List[float]] = {}  # row -> one median per seed
    for job in jobs:
        result = results.setdefault(job.row.name, RowResult(job.row))
        if costs and not result.costs:
            result.costs = row_costs(job, grid.input_shape,
                                     osp.dirname(job.work_dir))
        done = job.read_json('result.json')
        if done is None:
            continue
        measured = result.per_seed.setdefault(job.seed, {})
        for column, key in grid.metrics.items():
            value = done['metrics'].get(key)
            if value is not None and value >= 0:  # COCO's -1: no objects
                measured[column] = value * grid.scale
        log = _train_log(job)
        times = [line['time'] for line in log[len(log) // 10:]]
        if times:
            steps.setdefault(job.row.name, []).append(
                statistics.median(times))
        cuda = [line['memory'] for line in log if 'memory' in line]
        train = job.read_json('train.json') or {}
        memory, kind = ((max(cuda), 'cuda') if cuda else
                        (train.get('peak_rss_mib'), 'rss'))
        if memory is not None:
            result.peak_mem = max(result.peak_mem or 0, memory)
            result.memory_kind = kind
    for name, medians in steps.items():
        results[name].step_time = statistics.fmean(medians)
    return [results[row.name] for row in grid.rows if row.name in results]


def markdown(grid: Grid, results: Sequence[RowResult]) -> str:
    """The table as Markdown, with a line on what each column means."""
    columns = list(grid.metrics)
    head = ['row', 'seeds'] + [f'{c} (measured)' for c in columns] + [
        f'{c} (published)' for c in columns
    ] + ['source', 'params (M)', 'blocks (M)', 'GFLOPs', 'blocks (MFLOPs)',
         'step (s)', 'peak mem (MiB)']
    lines = [f'# {grid.title}', '', '| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    group = None
    for result in results:
        row = result.row
        if row.group and row.group != group:
            group = row.group
            lines.append(f'| **{group}** |' + ' |' * (len(head) - 1))
        costs = result.costs
        cells = [row.name, ','.join(map(str, result.seeds)) or 'none']
        cells += [_measured(result, c) for c in columns]
        cells += [_published(row, c) for c in columns]
        cells += [
            _source(row),
            _fmt(costs['params'] / 1e6, 2) if costs else 'n/a',
            _fmt(costs['block_params'] / 1e6, 3) if costs else 'n/a',
            _fmt(costs['flops'] / 1e9, 2) if costs else 'n/a',
            _fmt(costs['block_flops'] / 1e6, 2) if costs else 'n/a',
            _fmt(result.step_time, 3),
            (f'{result.peak_mem:.0f} ({result.memory_kind})'
             if result.peak_mem is not None else 'n/a'),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    shape = 'x'.join(map(str, grid.input_shape))
    lines += [
        '', f'Measured: mean ± sample std over the seeds, x{grid.scale:g} '
        f'(the published unit). FLOPs: multiply-adds at {shape} (H x W), '
        'attention included. Step: median train iteration. Peak mem: '
        "mmengine's max CUDA memory (cuda) or the train process's peak RSS "
        '(rss).'
    ]
    return '\n'.join(lines) + '\n'


def write_csv(path: str, grid: Grid, results: Sequence[RowResult]) -> None:
    """One line per (row, seed), then a mean and a std line per row."""
    columns = list(grid.metrics)
    fields = ['row', 'group', 'seed'] + columns + [
        f'published_{c}' for c in columns
    ] + ['published_source', 'verified', 'params', 'block_params', 'flops',
         'block_flops', 'step_time_s', 'peak_mem_mib', 'memory_kind']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for result in results:
            row = result.row
            common = dict(
                row=row.name, group=row.group,
                published_source=row.published['source']
                if row.published else '',
                verified=row.verified if row.published else '',
                params=result.costs.get('params', ''),
                block_params=result.costs.get('block_params', ''),
                flops=result.costs.get('flops', ''),
                block_flops=result.costs.get('block_flops', ''),
                step_time_s=result.step_time or '',
                peak_mem_mib=result.peak_mem or '',
                memory_kind=result.memory_kind)
            for c in columns:
                common[f'published_{c}'] = row.published_value(c) or ''
            for seed, measured in result.per_seed.items():
                values = {c: measured.get(c, '') for c in columns}
                writer.writerow(dict(common, seed=seed, **values))
            for stat in ('mean', 'std'):
                values = {c: getattr(result, stat)(c) for c in columns}
                writer.writerow(dict(common, seed=stat, **{
                    c: '' if v is None else v for c, v in values.items()}))
