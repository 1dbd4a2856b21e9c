"""Running the jobs: here, one after another (or a few side by side), or
one cluster job per row.

* ``launcher='none'``: each job trains then tests in a subprocess of this
  one (``tools/train.py`` / ``tools/test.py``); ``jobs`` of them run side by
  side, each told to use ``cpus // jobs`` threads. The train step's wall
  time and peak RSS are kept in ``train.json``.
* ``launcher='pytorch'``: the same, one job at a time, through
  ``tools/dist_train.sh`` / ``dist_test.sh`` on ``gpus`` processes.
* ``launcher='slurm'``: one ``sbatch`` script per job (``job.sbatch`` in its
  work dir) that trains and tests with ``srun``; the scripts are submitted
  and this process returns. ``--collect`` reads the results later.

A progress line per job, with an ETA from the jobs finished so far.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence

from .jobs import Job, shell

SBATCH = """#!/usr/bin/env bash
#SBATCH --job-name={name}
#SBATCH --output={out}
#SBATCH --nodes=1
#SBATCH --ntasks={gpus}
#SBATCH --ntasks-per-node={gpus}
#SBATCH --gres=gpu:{gpus}
#SBATCH --cpus-per-task={cpus}
{extra}set -euo pipefail
cd {cwd}
if [ ! -f {trained} ]; then
    srun {train}
    echo '{{"launcher": "slurm"}}' > {trained}
fi
srun {test}
{python} -m nonlocal_plugin.ablation.execute --record-test {work_dir}
"""


# helper functions


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def test_metrics(job: Job) -> Optional[Dict[str, float]]:
    """The metrics of the job's latest test run, from mmengine's json log.
    """
    logs = sorted(glob.glob(osp.join(job.path('test'), '*', '*.json')))
    for path in reversed(logs):
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for line in reversed(lines):
            metrics = {k: v for k, v in line.items()
                       if k not in ('data_time', 'time', 'step')}
            if metrics:
                return metrics
    return None


def record_test(job: Job) -> Dict:
    """Writes ``result.json`` from the test log; the result."""
    metrics = test_metrics(job)
    if metrics is None:
        raise RuntimeError(f'{job.label}: the test wrote no metrics under '
                           f'{job.path("test")}')
    result = dict(row=job.row.name, seed=job.seed, metrics=metrics,
                  checkpoint=job.checkpoint())
    job.write_json('result.json', result)
    return result


def _run(command: List[str], log: str, env: Dict[str, str]):
    """Runs ``command`` with output to ``log``; (exit status, wall s, peak
    RSS in MiB of the process tree's largest process)."""
    start = time.perf_counter()
    with open(log, 'a') as out:
        out.write(f'$ {shell(command)}\n')
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                           else -os.WTERMSIG(status))
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


class Progress:
    """Prints one line per job with an ETA; thread-safe."""

    def __init__(self, total: int, parallel: int,
                 write: Callable[[str], None] = print) -> None:
        self.total, self.parallel, self.write = total, parallel, write
        self.done, self.durations = 0, []
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def report(self, job: Job, message: str,
               duration: Optional[float] = None) -> None:
        with self.lock:
            self.done += 1
            if duration is not None:
                self.durations.append(duration)
            left = self.total - self.done
            eta = ''
            if self.durations and left:
                mean = sum(self.durations) / len(self.durations)
                eta = (f', ETA {_minutes(mean * left / self.parallel)} '
                       f'for {left} more')
            elapsed = _minutes(time.perf_counter() - self.start)
            self.write(f'[{self.done}/{self.total}] {job.label}: {message} '
                       f'(elapsed {elapsed}{eta})')
            sys.stdout.flush()


def _local_job(job: Job, *, grid_path: str, python: str, launcher: str,
               gpus: int, env: Dict[str, str], progress: Progress) -> bool:
    state = job.state()
    if state == 'finished':
        progress.report(job, 'finished before, skipped')
        return True
    job.write_config(grid_path)
    start = time.perf_counter()
    if state != 'trained':
        command = job.train_command(python, launcher, gpus)
        status, wall, rss = _run(command, job.path('train.out'), env)
        if status != 0:
            progress.report(job, f'training failed (exit {status}); see '
                            f'{job.path("train.out")}')
            return False
        job.write_json('train.json', dict(
            wall_s=round(wall, 2), peak_rss_mib=round(rss, 1),
            resumed=state == 'interrupted', launcher=launcher,
            command=shell(command)))
    command = job.test_command(python, launcher, gpus, job.checkpoint())
    status, _, _ = _run(command, job.path('test.out'), env)
    if status != 0:
        progress.report(job, f'test failed (exit {status}); see '
                        f'{job.path("test.out")}')
        return False
    result = record_test(job)
    shown = ', '.join(f'{k} {v:.3f}' for k, v in result['metrics'].items()
                      if k.endswith(('bbox_mAP', 'segm_mAP', 'mIoU')))
    verb = 'resumed and done' if state == 'interrupted' else 'done'
    progress.report(job, f'{verb} in {_minutes(time.perf_counter() - start)}'
                    f' ({shown})', time.perf_counter() - start)
    return True


# main functions


def run_local(jobs: Sequence[Job], *, grid_path: str, launcher: str = 'none',
              gpus: int = 1, parallel: int = 1,
              python: str = sys.executable) -> bool:
    """Trains and tests every job that is not finished; True if all ended
    well.

    Args:
        jobs (Sequence[Job]): The jobs, in order.
        grid_path (str): The grid file (named in the row configs).
        launcher (str): ``'none'`` or ``'pytorch'``.
        gpus (int): Processes per job under ``'pytorch'``.
        parallel (int): Jobs side by side (``'none'`` only).
        python (str): The interpreter of the tools.
    """
    env = dict(os.environ)
    env.setdefault('PYTHON', python)  # the interpreter of dist_*.sh
    if parallel > 1 and 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    progress = Progress(len(jobs), parallel)
    todo = sum(job.state() != 'finished' for job in jobs)
    print(f'{len(jobs)} jobs, {todo} to run, {parallel} at a time')

    def one(job: Job) -> bool:
        return _local_job(job, grid_path=grid_path, python=python,
                          launcher=launcher, gpus=gpus, env=env,
                          progress=progress)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(one, jobs))
    return all(results)


def slurm_script(job: Job, *, grid_path: str, gpus: int,
                 cpus_per_task: int = 5, partition: Optional[str] = None,
                 python: str = sys.executable) -> str:
    """The ``sbatch`` script of one job (training skipped once done)."""
    extra = f'#SBATCH --partition={partition}\n' if partition else ''
    name = f'ablate-{job.row.name}-s{job.seed}'
    return SBATCH.format(
        name=name, out=job.path('slurm-%j.out'), gpus=gpus,
        cpus=cpus_per_task, extra=extra, cwd=shell([os.getcwd()]),
        trained=shell([job.path('train.json')]),
        train=shell(job.train_command(python, 'slurm', gpus)),
        test=shell(job.test_command(python, 'slurm', gpus)),
        python=shell([python]), work_dir=shell([job.work_dir]))


def submit_slurm(jobs: Sequence[Job], *, grid_path: str, gpus: int,
                 partition: Optional[str] = None, dry_run: bool = False,
                 python: str = sys.executable) -> List[str]:
    """Writes one ``job.sbatch`` per unfinished job and submits it.

    Returns:
        list[str]: The ``sbatch`` commands (run unless ``dry_run``).
    """
    commands = []
    for job in jobs:
        if job.state() == 'finished':
            print(f'{job.label}: finished before, skipped')
            continue
        job.write_config(grid_path)
        script = job.path('job.sbatch')
        with open(script, 'w') as f:
            f.write(slurm_script(job, grid_path=grid_path, gpus=gpus,
                                 partition=partition, python=python))
        command = ['sbatch', script]
        commands.append(shell(command))
        if dry_run:
            print(f'{job.label}: {shell(command)}')
            continue
        out = subprocess.run(command, check=True, capture_output=True,
                             text=True).stdout.strip()
        print(f'{job.label}: {out or "submitted"}')
    return commands


def _record_main(argv: Sequence[str]) -> None:
    """``python -m nonlocal_plugin.ablation.execute --record-test WORK_DIR``
    (the last line of a slurm job)."""
    from .grid import Row
    work_dir = osp.abspath(argv[1])
    seed = int(osp.basename(work_dir)[len('seed'):])
    row = Row(name=osp.basename(osp.dirname(work_dir)), config='')
    result = record_test(Job(row, seed, work_dir))
    print(f'{work_dir}: {result["metrics"]}')


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] != '--record-test':
        raise SystemExit('usage: python -m nonlocal_plugin.ablation.execute '
                         '--record-test WORK_DIR')
    _record_main(sys.argv[1:])
