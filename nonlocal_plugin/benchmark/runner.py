"""The parent side: plans the cases and runs each in its own process."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

from .settings import DNL_MODE, GB, MB, PRELOAD, Shape
from .worker import make_result, peer_pairwise_bytes, worker_main


def mp_context(start_method: str, device: str = 'cpu'):
    """A multiprocessing context; the forkserver preloads the libraries.

    On CUDA, the libraries' import-time ``torch.cuda.is_available()``
    (mmengine's, mmcv's) would initialise the driver in the server and
    forbid CUDA in every process forked from it. The server therefore
    starts with ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which answers that
    question through NVML without initialising CUDA.
    """
    context = multiprocessing.get_context(start_method)
    if start_method == 'forkserver':
        if device == 'cuda':
            os.environ.setdefault('PYTORCH_NVML_BASED_CUDA_CHECK', '1')
        context.set_forkserver_preload(list(PRELOAD))
    return context


def forked_cuda_works(context, timeout: float = 300.0) -> Tuple[bool, str]:
    """Whether a worker forked from ``context`` can use CUDA."""
    result = run_isolated(dict(task='cuda_probe', device='cuda', threads=1),
                          context, timeout)
    return result['status'] == 'ok', result['note']


def run_isolated(spec: Dict[str, Any], context,
                 timeout: float) -> Dict[str, Any]:
    """Runs :func:`run_spec` in a fresh process and returns its result.

    Args:
        spec (dict): The measurement.
        context: A multiprocessing context (:func:`mp_context`).
        timeout (float): Seconds before the worker is killed.

    Returns:
        dict: The result; ``failed`` if the worker died or timed out.
    """
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker_main, args=(spec, sender))
    process.start()
    sender.close()
    result, timed_out = None, False
    try:
        if receiver.poll(timeout):
            result = receiver.recv()
        else:
            timed_out = True
    except EOFError:  # the worker died without sending
        pass
    finally:
        receiver.close()
    process.join(timeout=0 if timed_out else 60)
    if process.is_alive():
        process.kill()
        process.join()
    if result is not None:
        return result
    if timed_out:
        return make_result('failed', f'timed out after {timeout:g} s')
    if process.exitcode == -signal.SIGKILL:
        return make_result('failed', 'killed (out of memory?)')
    return make_result('failed', f'worker exited with code {process.exitcode}')


def measure_or_skip(spec: Dict[str, Any], context,
                    timeout: float) -> Dict[str, Any]:
    """Skips a peer block whose pairwise maps exceed the cap, else runs it."""
    if spec['task'] == 'block' and spec['impl'] == 'peer':
        need = peer_pairwise_bytes(spec['block'], spec['mode'],
                                   spec['shape'], batch=spec['batch'],
                                   sub_sample=spec['sub_sample'])
        if spec.get('cap_bytes') and need > spec['cap_bytes']:
            return make_result('skipped', f'needs ~{need / GB:.0f} GB',
                           need_bytes=need)
    return run_isolated(spec, context, timeout)


def plan_block_cases(grid: Dict[str, Shape], modes: Sequence[str],
                     blocks: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``(grid name, block, mode)`` of each block row, in table order."""
    cases = []
    for name in grid:
        for block in blocks:
            block_modes = modes if block == 'nl' else (DNL_MODE, )
            cases.extend((name, block, mode) for mode in block_modes)
    return cases


class Runner:
    """Runs the measurements of one invocation and keeps their results.

    Args:
        args (argparse.Namespace): The parsed command line.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = mp_context(args.start_method, args.device)
        if args.device == 'cuda' and args.start_method == 'forkserver':
            works, why = forked_cuda_works(self.context)
            if not works:
                print(f'[benchmark] CUDA fails in forked workers ({why}); '
                      'starting each worker as a new interpreter (spawn)',
                      file=sys.stderr, flush=True)
                args.start_method = 'spawn'
                self.context = mp_context('spawn')
        self.results: Dict[tuple, Dict[str, Any]] = {}
        self.base = dict(device=args.device, threads=args.threads,
                         repeats=args.repeats,
                         amp=getattr(args, 'amp', None),
                         cap_bytes=int(args.mem_cap_gb * GB))

    def run(self, key: tuple, **spec) -> Dict[str, Any]:
        """Measures one case, logs it to stderr and stores its result."""
        spec = {**self.base, **spec}
        start = time.perf_counter()
        result = measure_or_skip(spec, self.context, self.args.timeout)
        took = time.perf_counter() - start
        detail = (f"{result['time_s'] * 1e3:.1f} ms, "
                  f"{result['extra_bytes'] / MB:.1f} MB"
                  if result['status'] == 'ok' else result['note'])
        print(f'[benchmark] {" ".join(map(str, key))}: {result["status"]} '
              f'({detail}) in {took:.1f} s', file=sys.stderr, flush=True)
        self.results[key] = result
        return result

    def run_blocks(self, grid: Dict[str, Shape]) -> None:
        args = self.args
        for name, block, mode in plan_block_cases(grid, args.modes,
                                                  args.blocks):
            for impl in ('ours', 'peer'):
                self.run(('block', name, block, mode, impl), task='block',
                         block=block, impl=impl, mode=mode,
                         shape=grid[name], batch=args.batch,
                         sub_sample=args.sub_sample)

    def run_rates(self, mm_size: int, attention: Tuple[int, int]) -> None:
        self.run(('mm', mm_size), task='mm', size=mm_size)
        for backward in (False, True):
            self.run(('attention', attention, backward), task='attention',
                     size=attention, backward=backward)

    def run_model(self, image_size: Tuple[int, int]) -> None:
        for impl in ('ours', 'peer'):
            self.run(('model', image_size, impl), task='model', impl=impl,
                     size=image_size, repeats=self.args.model_repeats)


def merge_runs(runs: Sequence[Dict[tuple, Dict[str, Any]]]
               ) -> Dict[tuple, Dict[str, Any]]:
    """One result per case from several full runs.

    A case measured in every run gets the median of its times and of its
    memory peaks, and keeps each run's numbers (``time_runs``,
    ``bytes_runs``) for the spread; a case that failed or was skipped in any
    run keeps that run's result.

    Args:
        runs (list[dict]): :attr:`Runner.results` of each run.

    Returns:
        dict: Results keyed as :attr:`Runner.results`.
    """
    merged = {}
    for key in runs[0]:
        results = [run[key] for run in runs if key in run]
        bad = next((r for r in results if r['status'] != 'ok'), None)
        if bad is not None or len(runs) == 1:
            merged[key] = bad or results[0]
            continue
        result = dict(results[0])
        for field, runs_field in (('time_s', 'time_runs'),
                                  ('extra_bytes', 'bytes_runs')):
            values = [r[field] for r in results]
            result[field] = statistics.median(values)
            result[runs_field] = values
        merged[key] = result
    return merged
