"""The command line of ``tools/benchmark.py``."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Sequence, Tuple

from .memory import usable_cores
from .report import check_targets, machine_line, render
from .runner import Runner, merge_runs
from .settings import (
    AMP_DTYPES,
    BLOCKS,
    DEFAULT_MEM_CAP_GB,
    DEFAULT_TIMEOUT_S,
    GRID,
    IMAGE_SIZE,
    MM_SIZE,
    NL_MODES,
    QUICK_ATTENTION,
    QUICK_GRID,
    QUICK_MM_SIZE,
    RES3_ATTENTION,
    Shape,
)


def _parse_shape(text: str) -> Tuple[str, Shape]:
    """A grid entry: a name of :data:`GRID` or ``CxHxW``."""
    if text in GRID:
        return text, GRID[text]
    try:
        channels, height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'grid entries are {tuple(GRID)} or CxHxW such as 512x64x64, '
            f'got {text!r}') from None
    return text, (channels, height, width)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/benchmark.py``."""
    parser = argparse.ArgumentParser(
        prog='tools/benchmark.py',
        description='Time and peak extra memory of forward + backward of '
        "this package's blocks against mmcv's NonLocal2d and mmseg's "
        'DisentangledNonLocal2d, each case in its own process.')
    parser.add_argument(
        '--grid', nargs='+', type=_parse_shape, metavar='SHAPE',
        help=f'shapes: names {tuple(GRID)} or CxHxW. Default: all names')
    parser.add_argument('--modes', nargs='+', choices=NL_MODES,
                        default=list(NL_MODES), metavar='MODE',
                        help=f'NL pairwise modes, of {NL_MODES}. Default: '
                        'all (DNL always runs embedded_gaussian)')
    parser.add_argument('--blocks', nargs='+', choices=BLOCKS,
                        default=list(BLOCKS), metavar='BLOCK',
                        help='block families: nl (against mmcv), dnl '
                        '(against mmseg). Default: both')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny grid and rate sizes, no model')
    parser.add_argument('--repeats', type=_positive_int, default=3,
                        help='timed steps after 1 warm-up. Default: 3')
    parser.add_argument('--batch', type=_positive_int, default=1,
                        help='batch size of the block rows. Default: 1')
    parser.add_argument('--sub-sample', action='store_true',
                        help='build the blocks with sub_sample=True')
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        help='Default: cuda when available, else cpu')
    parser.add_argument(
        '--amp', choices=AMP_DTYPES,
        help='run the block and model forwards under torch.autocast in '
        'this dtype (the backward outside it, as AMP training does); the '
        'rate rows stay fp32. Default: fp32, no autocast')
    parser.add_argument('--threads', type=_positive_int,
                        default=usable_cores(),
                        help='torch threads. Default: usable cores')
    parser.add_argument(
        '--mem-cap-gb', type=float, default=DEFAULT_MEM_CAP_GB,
        help='per-case memory cap (GB): peers needing more are skipped; '
        f'CPU workers cannot grow past it. Default: {DEFAULT_MEM_CAP_GB:g}')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT_S,
                        help='seconds per case before it is killed')
    parser.add_argument('--skip-blocks', action='store_true',
                        help='leave out the block rows')
    parser.add_argument('--skip-rates', action='store_true',
                        help='leave out the torch.mm / attention rate rows')
    parser.add_argument('--skip-model', action='store_true',
                        help='leave out the Mask R-CNN train step')
    parser.add_argument('--image-size', nargs=2, type=int,
                        default=list(IMAGE_SIZE), metavar=('H', 'W'),
                        help='model input size. Default: 800 1216')
    parser.add_argument('--model-repeats', type=_positive_int, default=3,
                        help='timed model steps after 1 warm-up. Default: 3')
    parser.add_argument(
        '--start-method', choices=('forkserver', 'spawn'),
        default='forkserver',
        help='how workers start: forked from a server that imported the '
        'libraries once, or each a new interpreter (slower to start). '
        'Default: forkserver')
    parser.add_argument(
        '--runs', type=_positive_int, default=1,
        help='full runs of everything selected, one after the other; each '
        'cell then gives the median over the runs and their range. '
        'Default: 1')
    parser.add_argument('--out', help='also write the report to this file')
    parser.add_argument('--strict', action='store_true',
                        help='exit 1 unless every target passes')
    return parser


def _finish_args(args: argparse.Namespace) -> Dict[str, Shape]:
    """Fills defaults that depend on other options; returns the grid."""
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.quick:
        args.skip_model = True
    if args.grid:
        return dict(args.grid)
    return dict(QUICK_GRID if args.quick else GRID)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints the report; returns the exit code."""
    args = build_parser().parse_args(argv)
    grid = _finish_args(args)
    machine = machine_line(args)
    runs = []
    runner = Runner(args)  # one worker context (and CUDA probe) for all runs
    for index in range(args.runs):
        if args.runs > 1:
            print(f'[benchmark] full run {index + 1} of {args.runs}',
                  file=sys.stderr, flush=True)
        runner.results = {}
        if not args.skip_blocks:
            runner.run_blocks(grid)
        if not args.skip_rates:
            runner.run_rates(QUICK_MM_SIZE if args.quick else MM_SIZE,
                             QUICK_ATTENTION if args.quick else RES3_ATTENTION)
        if not args.skip_model:
            runner.run_model(tuple(args.image_size))
        runs.append(runner.results)
    results = merge_runs(runs)
    targets = check_targets(results, grid)
    report = render(args, grid, results, machine, targets)
    sys.stdout.write(report)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(report)
    failed = any(verdict != 'PASS' for verdict, _ in targets)
    return 1 if args.strict and failed else 0
