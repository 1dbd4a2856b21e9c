"""A stopped process of a training job says so in one line.

When one process of a multi-process job dies, the survivors' next
collective fails (gloo: ``Connection closed by peer``; a hung peer:
``Timed out`` after the process group's timeout, ``env_cfg.dist_cfg.
timeout`` seconds, 30 minutes by default), and ``torchrun`` sends the rest
``SIGTERM``. Either way each survivor used to print a long traceback.
Inside :func:`one_line_stop` both end in one ``error:`` line that names the
rank and the cause and says how to continue: ``--resume``.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import torch.distributed as dist

LOST_PEER = ('connection closed by peer', 'connection reset by peer',
             'broken pipe', 'timed out', 'socket timeout', 'gloo', 'nccl')
RESUME_HINT = ('run the same command with --resume to continue from the '
               'last complete checkpoint')


class TerminatedError(Exception):
    """The process received SIGTERM."""


def _rank() -> str:
    if dist.is_available() and dist.is_initialized():
        return f'rank {dist.get_rank()} of {dist.get_world_size()}: '
    return ''


def is_lost_peer(err: BaseException) -> bool:
    """Whether ``err`` says another process of the job is gone."""
    if not (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1):
        return False
    dist_error = getattr(dist, 'DistError', ())
    if dist_error and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        mark in text for mark in LOST_PEER)


def _raise_terminated(signum, frame) -> None:
    raise TerminatedError()


@contextlib.contextmanager
def one_line_stop() -> Iterator[None]:
    """Turns SIGTERM and a lost peer into ``SystemExit('error: ...')``."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    except TerminatedError:
        raise SystemExit(
            f'error: {_rank()}stopped by SIGTERM (torchrun sends it when '
            'another process of the job has failed; slurm when the job is '
            f'preempted or out of time); {RESUME_HINT}') from None
    except Exception as err:  # noqa: B902 only lost peers are handled
        if not is_lost_peer(err):
            raise
        first = ' '.join(str(err).split())[:300]
        raise SystemExit(
            f'error: {_rank()}another process of this job is gone, so '
            f'training cannot go on ({type(err).__name__}: {first}). Its '
            f'own log says why it stopped; {RESUME_HINT}') from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
