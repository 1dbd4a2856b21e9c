"""The markdown report and the target checks."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Sequence, Tuple

from .memory import cpu_memory_method, cpu_model, usable_cores
from .settings import (
    BACKWARD_FLOP_FACTOR,
    GB,
    GRID,
    MB,
    PEERS,
    RES3_ATTENTION,
    TARGETS,
    Shape,
)

COMPARISON_HEADER = ('case', 'peer', 'C x H x W', 'N', 'mode', 'ours ms',
                     'peer ms', 'time ours/peer', 'ours MB', 'peer MB',
                     'memory ours/peer')
RATE_HEADER = ('kernel', 'size', 'pass', 'ms', 'GFLOP', 'GFLOP/s',
               'fraction of mm')
MODEL_CASE = ('Mask R-CNN R50-FPN train step, 1 NL after res4 residual '
              'block 5 of 6')


def _num(value: float) -> str:
    if value >= 100:
        return f'{value:.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _ok(result: Dict[str, Any] | None) -> bool:
    return result is not None and result['status'] == 'ok'


RUNS_FIELD = {'time_s': 'time_runs', 'extra_bytes': 'bytes_runs'}


def _ratio(ours: Dict[str, Any], peer: Dict[str, Any], field: str) -> str:
    """Ours / peer of the medians; with several runs, the range of the
    runs' own ratios in brackets."""
    if not (_ok(ours) and _ok(peer)) or not peer[field]:
        return 'n/a'
    text = f'{ours[field] / peer[field]:.3f}'
    runs = RUNS_FIELD[field]
    if runs in ours and runs in peer:
        ratios = [a / b for a, b in zip(ours[runs], peer[runs]) if b]
        if ratios:
            text += f' ({min(ratios):.3f}-{max(ratios):.3f})'
    return text


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


class Report:
    """Turns the results into markdown tables.

    A failed case's message is long, so its cell reads ``failed [i]`` and
    the message is listed under the tables as note ``i``; so is a warning
    that came with a number (a fused kernel that fell back).

    Args:
        results (dict): :attr:`Runner.results`.
        grid (dict): The grid the block rows were measured on.
    """

    def __init__(self, results: Dict[tuple, Dict[str, Any]],
                 grid: Dict[str, Shape]) -> None:
        self.results = results
        self.grid = grid
        self.notes: List[str] = []

    def _note(self, note: str) -> str:
        if note not in self.notes:
            self.notes.append(note)
        return f'[{self.notes.index(note) + 1}]'

    def cell(self, result: Dict[str, Any], field: str) -> str:
        """A time (ms) or memory (MB) cell, or why there is no number.

        A number with a note (a fused kernel that fell back to the
        reference path) gets the note's marker too.
        """
        if result['status'] == 'ok':
            scale = 1e3 if field == 'time_s' else 1 / MB
            number = _num(result[field] * scale)
            runs = result.get(RUNS_FIELD[field])
            if runs:
                number += (f' ({_num(min(runs) * scale)}-'
                           f'{_num(max(runs) * scale)})')
            if result['note']:
                number += ' ' + self._note(result['note'])
            return number
        if result['status'] == 'skipped':
            return f"OOM/skipped ({result['note']})"
        return 'failed ' + self._note(result['note'])

    def _pair_row(self, labels: Sequence[str], key: tuple) -> List[str]:
        ours, theirs = self.results[key], self.results[key[:-1] + ('peer', )]
        return [
            *labels,
            self.cell(ours, 'time_s'),
            self.cell(theirs, 'time_s'),
            _ratio(ours, theirs, 'time_s'),
            self.cell(ours, 'extra_bytes'),
            self.cell(theirs, 'extra_bytes'),
            _ratio(ours, theirs, 'extra_bytes'),
        ]

    def comparison_rows(self) -> List[List[str]]:
        """One row per block case and model, ours against the peer."""
        rows = []
        for key in self.results:
            if key[-1] != 'ours':
                continue
            if key[0] == 'block':
                _, name, block, mode, _ = key
                channels, height, width = self.grid[name]
                labels = (f'{block.upper()} {name}', PEERS[block],
                          f'{channels} x {height} x {width}',
                          str(height * width), mode)
            else:  # model; N is that of res4 (stride 16) once padded
                height, width = key[1]
                positions = (_ceil_to(height, 32) // 16 *
                             (_ceil_to(width, 32) // 16))
                labels = (MODEL_CASE, PEERS['nl'], f'3 x {height} x {width}',
                          str(positions), 'embedded_gaussian')
            rows.append(self._pair_row(labels, key))
        return rows

    def rate_rows(self) -> List[List[str]]:
        """GFLOP/s of each rate case and its fraction of the mm rate."""
        mm_rate = _mm_rate(self.results)
        rows = []
        for key, result in self.results.items():
            if key[0] == 'mm':
                labels = ['torch.mm fp32', f'{key[1]} x {key[1]}', 'forward']
            elif key[0] == 'attention':
                (queries, head_dim), backward = key[1], key[2]
                labels = [
                    'softmax_attention fused fp32',
                    f'N=M={queries}, d={head_dim}',
                    'forward + backward' if backward else 'forward'
                ]
            else:
                continue
            if not _ok(result):
                rows.append(labels + [self.cell(result, 'time_s')] +
                            ['n/a'] * 3)
                continue
            rate = result['flops'] / result['time_s']
            rows.append(labels + [
                _num(result['time_s'] * 1e3),
                f"{result['flops'] / 1e9:.1f}",
                _num(rate / 1e9),
                f'{rate / mm_rate:.3f}' if mm_rate else 'n/a',
            ])
        return rows

    def lines(self) -> List[str]:
        """The tables and the notes their cells point to."""
        lines = []
        rows = self.comparison_rows()
        if rows:
            lines += _table(COMPARISON_HEADER, rows) + ['']
        rates = self.rate_rows()
        if rates:
            lines += [
                'FLOPs: torch.mm 2 n^3; attention forward 4 N M d, backward '
                f'{BACKWARD_FLOP_FACTOR:g}x the forward (the flash backward '
                'recomputes the logits), so forward + backward = '
                f'{1 + BACKWARD_FLOP_FACTOR:g}x the forward.', ''
            ]
            lines += _table(RATE_HEADER, rates) + ['']
        if self.notes:
            lines += ['Notes:']
            lines += [f'{i}. {note}' for i, note in enumerate(self.notes, 1)]
            lines += ['']
        return lines


# targets


def _mm_rate(results: Dict[tuple, Dict[str, Any]]) -> float | None:
    mm = next((r for k, r in results.items() if k[0] == 'mm'), None)
    return mm['flops'] / mm['time_s'] if _ok(mm) else None


def _block_pair(results, name: str | None, mode: str):
    return (results.get(('block', name, 'nl', mode, 'ours')),
            results.get(('block', name, 'nl', mode, 'peer')))


def _check_softmax(results, res3: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, res3, 'embedded_gaussian')
    if not (_ok(ours) and _ok(theirs)):
        return 'NOT RUN', 'no res3 embedded_gaussian rows with both numbers'
    time_ratio = ours['time_s'] / theirs['time_s']
    mem_ratio = ours['extra_bytes'] / max(theirs['extra_bytes'], 1)
    verdict = 'PASS' if mem_ratio <= 0.15 and time_ratio <= 0.8 else 'FAIL'
    return verdict, (f'memory {mem_ratio:.3f}x '
                     f"({ours['extra_bytes'] / MB:.0f} vs "
                     f"{theirs['extra_bytes'] / MB:.0f} MB), time "
                     f"{time_ratio:.3f}x ({ours['time_s'] * 1e3:.0f} vs "
                     f"{theirs['time_s'] * 1e3:.0f} ms)")


def _check_dot_product(results, res3: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, res3, 'dot_product')
    if not (_ok(ours) and _ok(theirs)):
        return 'NOT RUN', 'no res3 dot_product rows with both numbers'
    speedup = theirs['time_s'] / ours['time_s']
    verdict = 'PASS' if speedup >= 10 else 'FAIL'
    return verdict, (f"{speedup:.1f}x faster ({ours['time_s'] * 1e3:.1f} vs "
                     f"{theirs['time_s'] * 1e3:.1f} ms)")


def _check_concatenation(results, n4096: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, n4096, 'concatenation')
    if ours is None or theirs is None:
        return 'NOT RUN', 'no N=4096, C=512 concatenation rows'
    peer = ('completed' if _ok(theirs) else
            f"{theirs['status']}: {theirs['note']}")
    if not _ok(ours):
        return 'FAIL', f"ours {ours['status']}: {ours['note']}; mmcv {peer}"
    fits = ours['extra_bytes'] <= 1 * GB
    verdict = 'PASS' if fits and not _ok(theirs) else 'FAIL'
    return verdict, (f"ours completed with {ours['extra_bytes'] / MB:.0f} "
                     f"MB extra in {ours['time_s']:.2f} s; mmcv {peer}")


def _check_rate(results) -> Tuple[str, str]:
    mm_rate = _mm_rate(results)
    attention = results.get(('attention', RES3_ATTENTION, False))
    if mm_rate is None or not _ok(attention):
        return 'NOT RUN', ('no res3-scale attention rate row '
                           f'(N={RES3_ATTENTION[0]}, d={RES3_ATTENTION[1]})')
    rate = attention['flops'] / attention['time_s']
    verdict = 'PASS' if rate >= 0.9 * mm_rate else 'FAIL'
    return verdict, (f'{rate / mm_rate:.1%} ({rate / 1e9:.0f} vs '
                     f'{mm_rate / 1e9:.0f} GFLOP/s)')


def _check_every_block(results) -> Tuple[str, str]:
    behind = []
    pairs = 0
    for key, ours in results.items():
        if key[0] != 'block' or key[-1] != 'ours':
            continue
        peer = results.get(key[:-1] + ('peer', ))
        if not (_ok(ours) and _ok(peer)):
            continue
        pairs += 1
        for field, what in (('time_s', 'time'), ('extra_bytes', 'memory')):
            ratio = ours[field] / max(peer[field], 1e-12)
            if ratio > 1.0:
                behind.append(f'{key[2].upper()} {key[1]} {key[3]} {what} '
                              f'{ratio:.3f}x')
    if not pairs:
        return 'NOT RUN', 'no block rows with both numbers'
    if behind:
        return 'FAIL', f'{len(behind)} over 1.0x: ' + '; '.join(behind)
    return 'PASS', f'all {pairs} rows with both numbers'


def _check_model(results) -> Tuple[str, str]:
    models = {k[-1]: r for k, r in results.items() if k[0] == 'model'}
    ours, peer = models.get('ours'), models.get('peer')
    if not (_ok(ours) and _ok(peer)):
        return 'NOT RUN', 'no model rows with both numbers'
    ratio = ours['time_s'] / peer['time_s']
    return ('PASS' if ratio <= 1.0 else 'FAIL',
            f"{ratio:.3f}x ({ours['time_s']:.2f} vs {peer['time_s']:.2f} s)")


def _grid_name(grid: Dict[str, Shape], shape: Shape) -> str | None:
    return next((name for name, s in grid.items() if s == shape), None)


def check_targets(results: Dict[tuple, Dict[str, Any]],
                  grid: Dict[str, Shape]) -> List[Tuple[str, str]]:
    """Checks :data:`TARGETS` against the measured results.

    Args:
        results (dict): :attr:`Runner.results`.
        grid (dict): The grid the block rows were measured on; a target is
            ``NOT RUN`` when its shape is not in it.

    Returns:
        list[tuple[str, str]]: ``(verdict, line)`` per target, the verdict
        ``'PASS'``, ``'FAIL'`` or ``'NOT RUN'``.
    """
    res3 = _grid_name(grid, GRID['res3'])
    n4096 = _grid_name(grid, GRID['n4096'])
    checks = (_check_softmax(results, res3),
              _check_dot_product(results, res3),
              _check_concatenation(results, n4096), _check_rate(results),
              _check_every_block(results), _check_model(results))
    return [(verdict, f'- [{verdict}] {target}: {detail}')
            for target, (verdict, detail) in zip(TARGETS, checks)]


def machine_line(args: argparse.Namespace) -> str:
    """The header: machine, load, torch, threads and device."""
    import torch
    line = (f'Machine: {cpu_model()}, {os.cpu_count()} cores '
            f'({usable_cores()} usable, 1-min load {os.getloadavg()[0]:.1f} '
            f'at start), torch {torch.__version__}, {args.threads} threads, '
            f'device {args.device}')
    if args.device == 'cuda':
        line += f' ({torch.cuda.get_device_name()})'
    return line


def render(args: argparse.Namespace, grid: Dict[str, Shape],
           results: Dict[tuple, Dict[str, Any]], machine: str,
           targets: List[Tuple[str, str]]) -> str:
    """The report: header, tables, failures and targets.

    Args:
        args (argparse.Namespace): The parsed command line.
        grid (dict): The grid of the block rows.
        results (dict): :attr:`Runner.results`.
        machine (str): :func:`machine_line`, taken before the run.
        targets (list): :func:`check_targets`.

    Returns:
        str: Markdown.
    """
    memory = ('CUDA max_memory_allocated growth' if args.device == 'cuda'
              else cpu_memory_method())
    amp = getattr(args, 'amp', None)
    precision = (f'forward under {args.device} autocast {amp} (rate rows '
                 'fp32)' if amp else 'fp32')
    runs = getattr(args, 'runs', 1)
    spread = (f' Each number is the median of {runs} full runs, one after '
              'the other, with their range in brackets (for a ratio, the '
              "range of the runs' own ratios)." if runs > 1 else '')
    lines = [
        '# nonlocal_plugin benchmark', '', machine, '',
        f'Each case runs in its own process ({args.start_method}). Time: '
        f'median of {args.repeats} forward + backward steps after 1 warm-up '
        f'(model: {args.model_repeats}), batch {args.batch}, {precision}. '
        'Memory: '
        f'{memory}, the largest of the timed steps; 1 MB = 1e6 bytes. '
        'Ratios are ours / peer (lower is better). Peers whose pairwise '
        f'tensors exceed the {args.mem_cap_gb:g} GB cap are not run.'
        f'{spread}', ''
    ]
    lines += Report(results, grid).lines()
    lines += ['Targets:'] + [line for _, line in targets]
    return '\n'.join(lines) + '\n'
