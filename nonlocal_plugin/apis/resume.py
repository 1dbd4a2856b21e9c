"""Resuming a training run: which checkpoint, and the hooks that make the
resumed run equal the uninterrupted one (:mod:`.resume_hooks`).

* :func:`enable` switches a training config to
  :class:`~.resume_hooks.AtomicCheckpointHook` and adds
  :class:`~.resume_hooks.ExactResumeHook` (a config with
  ``exact_resume = False`` keeps mmengine's hooks).
* :func:`choose_checkpoint` is ``--resume`` without a file: the checkpoint
  that ``last_checkpoint`` names if it is complete, else the newest
  complete one in the work dir. A checkpoint is complete when its zip
  archive (torch's format since 1.6) ends with its central directory,
  which is written last.
"""
from __future__ import annotations

import glob
import os.path as osp
import zipfile
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log

from .checks import SetupError
from .resume_hooks import TMP_PREFIX

CHECKPOINT_HOOK = 'nonlocal_plugin.AtomicCheckpointHook'
RESEED_HOOK = 'nonlocal_plugin.ExactResumeHook'
MMENGINE_CHECKPOINT_HOOKS = ('CheckpointHook', 'mmengine.CheckpointHook')


def is_complete(path: str) -> bool:
    """Whether ``path`` is a whole checkpoint (not cut off mid-write)."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def enable(cfg: Config) -> None:
    """Puts the atomic checkpoint hook and the reseeding hook in ``cfg``.

    Args:
        cfg (Config): A training config; changed in place.
    """
    if not cfg.get('exact_resume', True):
        return
    hooks = cfg.get('default_hooks') or {}
    checkpoint = hooks.get('checkpoint')
    if isinstance(checkpoint, dict):
        if checkpoint.get('type', 'CheckpointHook') in (
                MMENGINE_CHECKPOINT_HOOKS):
            checkpoint['type'] = CHECKPOINT_HOOK
        elif checkpoint.get('type') != CHECKPOINT_HOOK:
            print_log(
                f"default_hooks.checkpoint is {checkpoint.get('type')!r}, "
                'not mmengine\'s CheckpointHook: its saves are left as they '
                'are (a kill during a save may leave a partial checkpoint)',
                logger='current')
    custom = list(cfg.get('custom_hooks') or [])
    if not any(
            isinstance(h, dict) and h.get('type') == RESEED_HOOK
            for h in custom):
        custom.append(dict(type=RESEED_HOOK))
    cfg.custom_hooks = custom


def choose_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from, or None if there is none.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str or None: A complete checkpoint.
    """
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    if named is not None and is_complete(named):
        return named
    candidates = sorted(
        (path for path in glob.glob(osp.join(work_dir, '*.pth'))
         if not osp.basename(path).startswith(TMP_PREFIX)),
        key=osp.getmtime, reverse=True)
    chosen = next((path for path in candidates if is_complete(path)), None)
    if named is not None:
        state = 'is missing' if not osp.exists(named) else (
            'is incomplete (its save was interrupted)')
        print_log(
            f'{pointer} names {named}, which {state}; '
            + (f'resuming from {chosen}, the newest complete checkpoint'
               if chosen else 'no complete checkpoint is left'),
            logger='current')
    elif chosen is None:
        print_log(f'--resume: no checkpoint in {work_dir}; training starts '
                  'from the beginning', logger='current')
    return chosen


def check_resume_file(path: str) -> None:
    """``--resume CHECKPOINT``: the file must be a whole checkpoint.

    Raises:
        SetupError: If it is missing or cut off.
    """
    if not osp.isfile(path):
        raise SetupError(f'--resume: checkpoint {path!r} is not a file')
    if not is_complete(path):
        raise SetupError(
            f'--resume: checkpoint {path!r} is incomplete (not a whole '
            'torch zip archive; a save was probably interrupted). Resume '
            'from an earlier checkpoint, or run --resume without a file to '
            'take the newest complete one')
