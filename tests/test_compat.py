"""The fixes in nonlocal_plugin.compat, and the package on a partial stack.
"""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from nonlocal_plugin import compat
from nonlocal_plugin.compat import chains_plugins


class _Plain:
    pass


# True from torch 2.6: torch.load defaults to weights_only=True.
WEIGHTS_ONLY_DEFAULT = compat.default_load_refuses({'x': _Plain()})


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


def test_resume_fix_applies_exactly_where_torch_refuses_mmengine_logs():
    applied = 'mmengine_safe_resume' in compat.applied_fixes()
    assert applied is WEIGHTS_ONLY_DEFAULT
    if applied:  # the fix worked: the probe now loads
        assert not compat.default_load_refuses_mmengine_logs()


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


@pytest.mark.skipif(
    not WEIGHTS_ONLY_DEFAULT,
    reason=f'torch {torch.__version__} unpickles anything by default '
    '(weights_only=False before torch 2.6); no fix applies there')
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


def _python(code, **env):
    """Runs ``code`` in a fresh interpreter; returns (returncode, output)."""
    proc = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        env={**os.environ, **env}, capture_output=True, text=True,
        timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_fixes_switch_off_with_one_variable():
    code = """
        import nonlocal_plugin
        from mmseg.models.backbones import resnet
        from nonlocal_plugin import compat
        print('applied', compat.applied_fixes())
        forward_plugin = resnet.Bottleneck.forward_plugin
        print('chains', compat.chains_plugins(forward_plugin))
    """
    rc, out = _python(code, NONLOCAL_PLUGIN_NO_FIXES='all')
    assert rc == 0, out
    assert 'applied []' in out
    assert 'nonlocal_plugin: ' not in out  # nothing logged
    rc, out = _python(code, NONLOCAL_PLUGIN_NO_FIXES='mmseg_plugin_chaining')
    assert rc == 0, out
    assert "'mmseg_plugin_chaining'" not in out.split('applied')[1]


def test_each_applied_fix_is_logged_once():
    rc, out = _python('import nonlocal_plugin, nonlocal_plugin.compat as c;'
                      'c.apply_all(); print(c.applied_fixes())')
    assert rc == 0, out
    applied = eval(out.strip().splitlines()[-1])
    assert out.count('nonlocal_plugin: ') == len(applied)
    assert out.count(f'(set {compat.ENV_VAR}=all to disable)') == len(applied)


def test_unknown_fix_name_is_refused(monkeypatch):
    monkeypatch.setenv(compat.ENV_VAR, 'mmseg_plugin_chainin')
    with pytest.raises(ValueError, match='mmseg_plugin_chaining'):
        compat.apply_all()


@pytest.mark.parametrize('missing, backbone, present', [
    ('mmseg', 'ResNetV1cNL', 'ResNetNL'),
    ('mmdet', 'ResNetNL', 'ResNetV1cNL'),
])
def test_blocks_work_without_the_other_library(missing, backbone, present):
    # sys.modules[name] = None makes `import name` fail as if not installed.
    code = f"""
        import sys
        sys.modules['{missing}'] = None
        import torch
        import nonlocal_plugin
        from nonlocal_plugin import NonLocal2D, MODELS
        from nonlocal_plugin.backbones import MissingLibraryError
        x = torch.randn(1, 8, 4, 4)
        assert NonLocal2D(8)(x).shape == x.shape
        assert MODELS.get('{present}').__module__.startswith(
            'nonlocal_plugin.backbones.')
        try:
            MODELS.build(dict(type='{backbone}', depth=18))
        except MissingLibraryError as err:
            print('error:', err)
    """
    rc, out = _python(code)
    assert rc == 0, out
    assert (f"error: nonlocal_plugin.{backbone} needs {missing}, which is not "
            f"installed: pip install 'nonlocal_plugin[{missing}]'") in out


def test_blocks_work_with_mmcv_lite():
    # mmcv-lite has no compiled ops; mmdet's and mmseg's models import them.
    code = """
        import sys
        sys.modules['mmcv._ext'] = None
        import torch
        from nonlocal_plugin import ContextBlock, MODELS
        from nonlocal_plugin.backbones import MissingLibraryError
        x = torch.randn(1, 8, 4, 4)
        assert ContextBlock(8, 0.5)(x).shape == x.shape
        for name in ('ResNetNL', 'ResNetV1cNL'):
            try:
                MODELS.build(dict(type=name, depth=18))
            except MissingLibraryError as err:
                print('error:', err)
    """
    rc, out = _python(code)
    assert rc == 0, out
    for name, lib in (('ResNetNL', 'mmdet'), ('ResNetV1cNL', 'mmseg')):
        assert (f'error: nonlocal_plugin.{name} needs {lib}, whose models '
                "import mmcv's compiled ops") in out


def test_env_check_names_a_mismatched_mmcv_build_in_one_line(monkeypatch,
                                                             capsys):
    import runpy
    script = os.path.join(os.path.dirname(__file__), '..', 'tools',
                          'check_env.py')
    check = runpy.run_path(script)['main']
    assert check() == 0
    monkeypatch.setitem(sys.modules, 'mmcv._ext', None)  # as if unloadable
    assert check() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: mmcv's compiled ops do not load under "
                             f'torch {torch.__version__}')
    assert '--no-cache-dir' in err[0]
