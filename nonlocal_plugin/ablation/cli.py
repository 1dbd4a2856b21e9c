"""The command line of ``tools/ablate.py``."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List

from mmengine.config import Config

from .grid import Grid, grid_from_configs, load_grid
from .jobs import default_work_root, make_jobs, shell

EPILOG = """\
examples:
  tools/ablate.py configs/ablations/toy_two-tasks.py --dry-run
  tools/ablate.py configs/ablations/toy_two-tasks.py --seeds 0 1 --jobs 2
  tools/ablate.py configs/ablations/gcnet_table2.py --launcher slurm --gpus 8
  tools/ablate.py configs/ablations/toy_two-tasks.py --collect --plot
  tools/ablate.py configs/mmdet/a.py configs/mmdet/b.py --seeds 0
"""


def ablate_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/ablate.py``."""
    parser = argparse.ArgumentParser(
        description='Train and test the rows of an ablation grid (or a list '
        'of configs) over seeds, and collect them into ablation.md, '
        'ablation.csv and, with --plot, ablation.png.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        'grid', nargs='+', help='a grid file (configs/ablations/*.py) or '
        'one or more mmdet/mmseg configs')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0],
                        help='randomness.seed of each run (default: 0)')
    parser.add_argument('--rows', nargs='+', metavar='NAME',
                        help='only these rows')
    parser.add_argument(
        '--work-root', help='where the rows go (default: work_dirs/'
        'ablations/<grid name>); <row>/seed<S>/ under it')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='applied to every row, as tools/train.py takes them')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--dry-run', action='store_true',
                      help='print the rows and each job\'s commands; run '
                      'and write nothing')
    mode.add_argument('--collect', action='store_true',
                      help='only build the table from the work dirs')
    parser.add_argument('--plot', action='store_true',
                        help='also write ablation.png (needs matplotlib)')
    parser.add_argument('--no-costs', action='store_true',
                        help='leave out params and FLOPs (they build each '
                        "row's model once)")
    parser.add_argument(
        '--launcher', choices=('none', 'pytorch', 'slurm'), default='none',
        help='none: here, one process per job; pytorch: here, --gpus '
        'processes per job through tools/dist_train.sh; slurm: one sbatch '
        'job per row and seed')
    parser.add_argument('--gpus', type=int, default=1,
                        help='GPUs (processes) per job with a launcher')
    parser.add_argument('--partition', help='slurm partition')
    parser.add_argument(
        '--jobs', type=int, default=1,
        help='jobs side by side with --launcher none, each with '
        'cpus/jobs threads (default 1)')
    return parser


def _load(paths: List[str]) -> Grid:
    if len(paths) == 1 and 'rows' in Config.fromfile(paths[0]):
        return load_grid(paths[0])
    return grid_from_configs(paths)


def _dry_run(grid: Grid, jobs, launcher: str, gpus: int) -> None:
    print(f'# {grid.title}')
    for row in grid.rows:
        if row.name not in {job.row.name for job in jobs}:
            continue
        published = ('none' if row.published is None else
                     'not verified' if not row.verified else ', '.join(
                         f'{c} {row.published_value(c)}' for c in grid.metrics
                         if row.published_value(c) is not None))
        print(f'\n{row.name}' + (f'  [{row.group}]' if row.group else ''))
        print(f'  config:    {osp.relpath(row.config)}')
        print(f'  overrides: {row.overrides or "none"}')
        print(f'  published: {published}' + (
            f" ({row.published['source']})" if row.published else ''))
        for job in (j for j in jobs if j.row is row):
            print(f'  seed {job.seed} ({job.state()}; the run writes '
                  f'{osp.relpath(job.config)}):')
            commands = [job.test_command(sys.executable, launcher, gpus)]
            if job.state() != 'trained':
                commands.insert(
                    0, job.train_command(sys.executable, launcher, gpus))
            for command in commands:
                print(f'    {shell(command)}')


def _write_table(grid: Grid, jobs, work_root: str, *, plot: bool,
                 costs: bool) -> None:
    from .collect import collect, markdown, write_csv
    results = collect(grid, jobs, costs=costs)
    os.makedirs(work_root, exist_ok=True)
    md = osp.join(work_root, 'ablation.md')
    with open(md, 'w') as f:
        f.write(markdown(grid, results))
    write_csv(osp.join(work_root, 'ablation.csv'), grid, results)
    print(open(md).read())
    print(f'written: {md}, {osp.join(work_root, "ablation.csv")}')
    if plot:
        from .plot import plot as draw
        png = draw(osp.join(work_root, 'ablation.png'), grid, results)
        print(f'written: {png}')


def ablate_main(argv: List[str] | None = None) -> int:
    """``tools/ablate.py``; returns the exit status."""
    args = ablate_parser().parse_args(argv)
    if args.gpus < 1 or args.jobs < 1:
        raise SystemExit('error: --gpus and --jobs must be at least 1')
    if args.jobs > 1 and args.launcher != 'none':
        raise SystemExit('error: --jobs runs jobs side by side on this '
                         'machine; with a launcher use --gpus')
    try:
        grid = _load(args.grid)
        work_root = args.work_root or default_work_root(grid)
        jobs = make_jobs(grid, args.seeds, work_root, args.cfg_options,
                         args.rows)
    except (ValueError, TypeError) as err:
        raise SystemExit(f'error: {err}') from None
    if args.dry_run:
        _dry_run(grid, jobs, args.launcher, args.gpus)
        return 0
    ok = True
    if not args.collect:
        from . import execute
        if args.launcher == 'slurm':
            execute.submit_slurm(jobs, grid_path=grid.path, gpus=args.gpus,
                                 partition=args.partition)
            print('submitted; collect the table with --collect when the '
                  'jobs are done')
            return 0
        ok = execute.run_local(jobs, grid_path=grid.path,
                               launcher=args.launcher, gpus=args.gpus,
                               parallel=args.jobs)
    _write_table(grid, jobs, work_root, plot=args.plot,
                 costs=not args.no_costs)
    return 0 if ok else 1
