"""The parent side: plans the cases and runs each in its own process."""
from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

from .settings import DNL_MODE, GB, MB, PRELOAD, Shape
from .worker import make_result, peer_pairwise_bytes, worker_main


def mp_context(start_method: str):
    """A multiprocessing context; the forkserver preloads the libraries."""
    context = multiprocessing.get_context(start_method)
    if start_method == 'forkserver':
        context.set_forkserver_preload(list(PRELOAD))
    return context


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
        self.context = mp_context(args.start_method)
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
