"""The fixes in nonlocal_plugin.compat for the pinned stack."""
import pickle

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from nonlocal_plugin.compat import chains_plugins


class _Regression(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=(out - targets).square().mean())
        return out


class _Points(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        x = torch.tensor([float(index), 1.0])
        return dict(inputs=x, targets=x[:1] * 2)


def _runner(work_dir, max_iters, resume):
    return Runner(
        model=_Regression(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Points(), batch_size=4,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        default_scope=None,
    )


def test_training_resumes_under_torch_weights_only_default(tmp_path):
    first = _runner(tmp_path, max_iters=2, resume=False)
    first.train()
    saved = first.model.linear.weight.detach().clone()
    # The checkpoint holds mmengine's own log types, which torch >= 2.6
    # refuses to unpickle by default without the allowlist.
    second = _runner(tmp_path, max_iters=4, resume=True)
    second.train()
    assert second.iter == 4
    # The resumed log buffers still compute their statistics.
    loss_log = second.message_hub.get_scalar('train/loss')
    assert loss_log.statistics('mean') > 0
    assert len(loss_log.data[0]) == 4  # two iterations logged before resume
    resumed = torch.load(tmp_path / 'iter_2.pth')
    torch.testing.assert_close(resumed['state_dict']['linear.weight'], saved)
    assert 'message_hub' in resumed


class _Evil:

    def __reduce__(self):
        return (print, ('ran arbitrary code', ))


def test_arbitrary_pickles_are_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        torch.save({'x': _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_chains_plugins_probe():

    def chained(self, x, names):
        for name in names:
            x = getattr(self, name)(x)
        return x

    def last_only(self, x, names):
        out = x
        for name in names:
            out = getattr(self, name)(x)
        return out

    assert chains_plugins(chained)
    assert not chains_plugins(last_only)
