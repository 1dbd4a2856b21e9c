"""Hooks that make a killed training run resume exactly.

The tools put both into every training config (:func:`.resume.enable`):

* :class:`AtomicCheckpointHook`, mmengine's ``CheckpointHook`` with saves
  that a kill cannot corrupt. mmengine 0.10 first deletes the checkpoint
  that ``max_keep_ckpts`` drops, then writes the new one in place, then
  rewrites ``last_checkpoint``: a run killed during the write is left with
  no complete checkpoint at all, and ``last_checkpoint`` names a deleted
  file. Here the new checkpoint is written to a hidden temporary file,
  flushed to disk and renamed into place (``os.replace`` is atomic on one
  file system), then ``last_checkpoint`` is replaced the same way, and only
  then are outdated checkpoints deleted. Other storage backends (S3,
  petrel) keep mmengine's behaviour.
* :class:`ExactResumeHook`, which makes the random state a function of the
  seed and the position in the schedule. mmengine seeds the random
  generators once when a run starts, and a checkpoint holds no random
  state, so a resumed run draws different augmentations and samples than
  the run it continues. This hook reseeds Python's, numpy's and torch's
  generators before every batch is loaded and before every iteration, from
  ``(seed, iteration)``; an uninterrupted run and a resumed one then draw
  the same numbers from the resume point on. Dataloader workers are seeded
  by mmengine's ``worker_init_fn`` each epoch, which holds unless
  ``persistent_workers=True`` (their state then outlives an epoch and is
  not in the checkpoint).
"""
from __future__ import annotations

import glob
import logging
import os
import os.path as osp
import random
from typing import Any, Iterator, List

import numpy as np
import torch
from mmengine.dist import get_rank, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from ..registry import HOOKS

TMP_PREFIX = '.incomplete-'

# helper functions


def write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a reader sees all of it or the
    previous file: a temporary file, fsync, rename, fsync of the folder."""
    folder = osp.dirname(path) or '.'
    tmp = osp.join(folder, f'{TMP_PREFIX}{osp.basename(path)}')
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _seed_of(seed: int, stream: int, index: int, rank: int) -> int:
    """A 32-bit seed from the run's seed and a position in the schedule."""
    state = np.random.SeedSequence([seed, stream, index, rank])
    return int(state.generate_state(1)[0])


# main classes


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints are complete or absent.

    Takes ``CheckpointHook``'s arguments. On a local file system the
    checkpoint is renamed into place once written and flushed, then
    ``last_checkpoint`` is replaced, and only then are the checkpoints that
    ``max_keep_ckpts`` drops deleted. A save killed halfway leaves a hidden
    ``.incomplete-*`` file, deleted when the next run starts.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            for stale in glob.glob(osp.join(self.out_dir, TMP_PREFIX + '*')):
                os.remove(stale)
                runner.logger.info(
                    f'Removed {stale}, left by a checkpoint save that did '
                    'not finish')

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _outdated(self, runner, step: int) -> List[str]:
        """Updates ``keep_ckpt_ids`` as mmengine does; the paths to delete
        once the new checkpoint is in place."""
        outdated = []
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return outdated
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            old = self.keep_ckpt_ids.popleft()
            outdated.append(
                osp.join(self.out_dir, self.filename_tmpl.format(old)))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return outdated

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = self._outdated(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_name = TMP_PREFIX + filename
        runner.save_checkpoint(
            self.out_dir, tmp_name, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        tmp = osp.join(self.out_dir, tmp_name)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.last_ckpt)
        _fsync_dir(self.out_dir)
        write_atomically(osp.join(runner.work_dir, 'last_checkpoint'),
                         self.last_ckpt.encode())
        for path in outdated:
            if osp.isfile(path):
                os.remove(path)


class _ReseedingIterator:
    """Reseeds before each batch an iteration-based loop draws."""

    def __init__(self, iterator: Iterator, reseed) -> None:
        self._iterator = iterator
        self._reseed = reseed
        self._drawn = 0

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        self._reseed(self._drawn)
        self._drawn += 1
        return next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


def _skips_on_resume(loop: Any) -> bool:
    """Whether an iteration-based loop advances its dataloader past the
    batches already trained when it resumes (mmengine >= 0.10.3 does)."""
    import inspect
    try:
        source = inspect.getsource(type(loop).run)
    except (OSError, TypeError):
        return True  # cannot tell: do not warn
    return 'range(self._iter)' in source


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Reseeds the random generators from ``(seed, iteration)``.

    Before batch ``i`` is loaded and before iteration ``i`` runs, Python's
    ``random``, numpy's global generator and torch's generators (CPU and
    CUDA) are seeded from the run's seed, ``i`` and (with
    ``randomness.diff_rank_seed``) the rank, so the numbers drawn from any
    iteration on do not depend on whether the run was resumed there.
    """

    priority = 'VERY_HIGH'
    _DATA, _MODEL = 0, 1

    def _reseed(self, runner, stream: int, index: int) -> None:
        seed = runner.seed if runner.seed is not None else 0
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        rank = get_rank() if randomness.get('diff_rank_seed') else 0
        value = _seed_of(int(seed), stream, int(index), rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)

    def before_train_epoch(self, runner) -> None:
        loop = runner.train_loop
        iterator = getattr(loop, 'dataloader_iterator', None)
        if iterator is not None and runner.iter > 0 and not _skips_on_resume(
                loop):
            print_log(
                'ExactResumeHook: this mmengine resumes an iteration-based '
                'loop without skipping the batches already trained (mmengine '
                '< 0.10.3), so the resumed run sees other data than an '
                'uninterrupted one and is not exact; use mmengine >= 0.10.3',
                logger='current', level=logging.WARNING)
        if iterator is not None:  # IterBasedTrainLoop: it draws, skips
            if not isinstance(iterator, _ReseedingIterator):
                loop.dataloader_iterator = _ReseedingIterator(
                    iterator,
                    lambda i: self._reseed(runner, self._DATA, i))
        else:  # EpochBasedTrainLoop: the epoch's first batch
            self._reseed(runner, self._DATA, runner.iter)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Any = None) -> None:
        self._reseed(runner, self._MODEL, runner.iter)

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Any = None,
                         outputs: Any = None) -> None:
        if getattr(runner.train_loop, 'dataloader_iterator', None) is None:
            # The next batch of this epoch is loaded before the next
            # before_train_iter; runner.iter counts the iteration just run.
            self._reseed(runner, self._DATA, runner.iter + 1)
