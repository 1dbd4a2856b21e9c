"""Resuming: a killed run continues exactly where an uninterrupted one would
be, and a checkpoint cut off mid-save is never the one resumed from.

The default suite runs mmengine's Runner in this process on a tiny model
whose data and forward both draw random numbers. The slow suite trains the
toy Mask R-CNN with the tools, kills it with SIGKILL mid-epoch and
mid-checkpoint-save (and one process of a 2-process ``dist_train.sh`` run),
resumes, and compares the loss curve, the final weights and the final AP
with an uninterrupted run.
"""
import os
import os.path as osp
import signal
import time
import uuid
import zipfile

import numpy as np
import pytest
import torch
from mmengine.fileio import LocalBackend
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.loops import IterBasedTrainLoop
from torch import nn

from nonlocal_plugin.apis import SetupError, resume
from nonlocal_plugin.apis.resume_hooks import TMP_PREFIX, _skips_on_resume

# a tiny training run, in this process


@pytest.fixture(autouse=True)
def _keep_default_scope():
    """A Runner makes its default scope the current one for the process;
    later tests must not inherit it."""
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


class NoisyDataset(torch.utils.data.Dataset):
    """Each item draws numpy noise, as an augmentation does."""

    metainfo = {}

    def __len__(self):
        return 12

    def __getitem__(self, index):
        x = torch.full((4, ), float(index)) / 12
        noise = torch.from_numpy(np.random.normal(size=4).astype('float32'))
        return dict(inputs=x + 0.1 * noise, data_samples=torch.ones(1))


class NoisyModel(BaseModel):
    """A model whose forward draws torch noise, as a sampler does."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.linear(inputs + 0.1 * torch.randn_like(inputs))
        if mode == 'loss':
            target = (torch.stack(data_samples)
                      if isinstance(data_samples, list) else data_samples)
            return dict(loss=((out - target)**2).mean())
        return out


def tiny_runner(work_dir, max_epochs, *, hooks=True, resume_from=None,
                by_epoch=True):
    """``max_epochs`` epochs of 4 iterations (``by_epoch=False``: as many
    iterations, checkpoints every 4)."""
    checkpoint = dict(type='nonlocal_plugin.AtomicCheckpointHook'
                      if hooks else 'CheckpointHook', interval=1 if by_epoch
                      else 4, max_keep_ckpts=1, by_epoch=by_epoch)
    train_cfg = (dict(by_epoch=True, max_epochs=max_epochs) if by_epoch
                 else dict(by_epoch=False, max_iters=4 * max_epochs))
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=NoisyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=NoisyDataset(), batch_size=3, num_workers=0,
            sampler=dict(type='DefaultSampler' if by_epoch else
                         'InfiniteSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1,
                                          momentum=0.9)),
        train_cfg=train_cfg,
        default_hooks=dict(checkpoint=checkpoint, logger=None),
        custom_hooks=[dict(type='nonlocal_plugin.ExactResumeHook')]
        if hooks else [],
        randomness=dict(seed=7, deterministic=True),
        resume=resume_from is not None, load_from=resume_from,
        experiment_name=uuid.uuid4().hex, default_scope='mmengine')


def trained_weights(runner):
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs', 'iters'])
@pytest.mark.parametrize('hooks', [True, False], ids=['hooks', 'mmengine'])
def test_resumed_run_equals_uninterrupted(tmp_path, hooks, by_epoch):
    if hooks and not by_epoch and not _skips_on_resume(
            IterBasedTrainLoop.__new__(IterBasedTrainLoop)):
        pytest.skip('this mmengine (< 0.10.3) does not skip trained batches '
                    'when an iteration-based loop resumes; ExactResumeHook '
                    'warns there')
    whole = trained_weights(
        tiny_runner(tmp_path / 'whole', 4, hooks=hooks, by_epoch=by_epoch))
    tiny_runner(tmp_path / 'cut', 2, hooks=hooks, by_epoch=by_epoch).train()
    saved = 'epoch_2.pth' if by_epoch else 'iter_8.pth'
    resumed = trained_weights(
        tiny_runner(tmp_path / 'cut2', 4, hooks=hooks, by_epoch=by_epoch,
                    resume_from=str(tmp_path / 'cut' / saved)))
    equal = all(torch.equal(whole[k], resumed[k]) for k in whole)
    if equal and not hooks:
        pytest.skip('mmengine now resumes the random state by itself; '
                    'ExactResumeHook is no longer needed')
    # mmengine seeds once per run, so its resumed run draws other noise.
    assert equal is hooks


class _InterruptedError(Exception):
    pass


@pytest.fixture
def save_killed_at_epoch_2(monkeypatch):
    """The write of the epoch-2 checkpoint stops halfway, as under SIGKILL.
    """
    put = LocalBackend.put

    def half_put(self, obj, filepath):
        if 'epoch_2' in osp.basename(str(filepath)):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise _InterruptedError()
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', half_put)


def test_save_cut_off_leaves_the_last_checkpoint(tmp_path,
                                                 save_killed_at_epoch_2):
    with pytest.raises(_InterruptedError):
        tiny_runner(tmp_path, 3).train()
    first = str(tmp_path / 'epoch_1.pth')
    # max_keep_ckpts=1: mmengine deletes epoch_1.pth before it writes
    # epoch_2.pth; here it stays until epoch_2.pth is whole.
    assert resume.is_complete(first)
    assert not osp.exists(tmp_path / 'epoch_2.pth')
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read() == first
    assert resume.choose_checkpoint(str(tmp_path)) == first
    assert osp.exists(tmp_path / f'{TMP_PREFIX}epoch_2.pth')


def test_choose_checkpoint_skips_a_cut_off_file(tmp_path):
    good, cut = tmp_path / 'epoch_1.pth', tmp_path / 'epoch_2.pth'
    torch.save({'state_dict': {}}, good)
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, cut)
    with open(cut, 'rb') as f:
        data = f.read()
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    os.utime(cut)  # the newest file
    (tmp_path / 'last_checkpoint').write_text(str(cut))
    assert zipfile.is_zipfile(good) and not zipfile.is_zipfile(cut)
    assert resume.choose_checkpoint(str(tmp_path)) == str(good)
    with pytest.raises(SetupError, match='is incomplete'):
        resume.check_resume_file(str(cut))  # --resume epoch_2.pth
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    assert resume.choose_checkpoint(str(tmp_path)) == str(good)
    os.remove(good)
    assert resume.choose_checkpoint(str(tmp_path)) is None


def test_next_run_removes_the_cut_off_file(tmp_path, save_killed_at_epoch_2,
                                           monkeypatch):
    with pytest.raises(_InterruptedError):
        tiny_runner(tmp_path, 3).train()
    monkeypatch.undo()
    tiny_runner(tmp_path, 3,
                resume_from=str(tmp_path / 'epoch_1.pth')).train()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TMP_PREFIX)]
    assert resume.is_complete(str(tmp_path / 'epoch_3.pth'))


def test_kernel_probe_leaves_the_random_generators_alone():
    # The SDPA probe runs on a block's first call: drawing from the global
    # generator there shifts every later draw of a fresh (or resumed) run.
    from nonlocal_plugin.ops import sdpa
    sdpa._accepts.cache_clear()
    state = torch.get_rng_state()
    sdpa.fused_backend(torch.device('cpu'), torch.float32, 24, grad=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_sigterm_ends_in_one_line():
    # torchrun sends SIGTERM to the survivors when a process of the job dies;
    # slurm sends it on preemption.
    from nonlocal_plugin.apis.interrupts import one_line_stop
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        with one_line_stop():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler interrupts this
    assert info.value.code.startswith('error: stopped by SIGTERM')
    assert '--resume' in info.value.code
    assert signal.getsignal(signal.SIGTERM) is before
