"""Real processes, real signals (slow): the toy Mask R-CNN trained with
``tools/train.py`` and ``tools/dist_train.sh``, killed with SIGKILL mid-epoch,
mid-checkpoint-save, or one process of two, then resumed with ``--resume``,
ends with the loss curve (from the resume point), the final weights and the
final AP of an uninterrupted run with the same seed in deterministic mode.
Each test prints its wall times (``pytest -s``).
"""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_tools import TOOLS, TOY_DET, free_port, run_tool

WORK = 'work'
# 32 images in batches of 2: 16 iterations an epoch; AP only at the end.
SHORT = ('toy_dataset.num_train=32', 'toy_dataset.num_val=8',
         'train_dataloader.batch_size=2', 'train_cfg.max_epochs=3',
         'train_cfg.val_interval=3', 'default_hooks.logger.interval=1',
         'log_processor.window_size=1', 'default_hooks.checkpoint.interval=1',
         'randomness.deterministic=True')
# mmengine pads the iteration: 'Epoch(train) [2][ 8/16]'
MID_EPOCH_2 = r'Epoch\(train\) \[2\]\[\s*8/16\]'
DIST = SHORT[:2] + ('train_dataloader.batch_size=1', ) + SHORT[3:]
SLOW_SAVE = '''
import os, time
from mmengine.fileio import LocalBackend
_put = LocalBackend.put
def put(self, obj, filepath):
    if os.environ['SLOW_SAVE_NAME'] in os.path.basename(str(filepath)):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
        open(os.environ['SLOW_SAVE_MARKER'], 'w').close()
        time.sleep(600)
    return _put(self, obj, filepath)
LocalBackend.put = put
'''

pytestmark = pytest.mark.slow

# helper functions


def train_args(options, extra=(), config=TOY_DET):
    return [sys.executable, osp.join(TOOLS, 'train.py'), config,
            '--work-dir', WORK, *extra, '--cfg-options', *options]


def dist_args(options, extra=()):
    return ['bash', osp.join(TOOLS, 'dist_train.sh'), TOY_DET, '2',
            '--work-dir', WORK, *extra, '--cfg-options', *options]


def start(args, cwd, log, env=None):
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    out = open(osp.join(cwd, log), 'w')
    return subprocess.Popen(args, cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT, env=full_env), out


def wait_for(predicate, proc, timeout=600):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, 'the run ended before the kill point'
        assert time.time() < deadline, 'kill point not reached'
        time.sleep(0.2)


def printed(cwd, log, pattern):
    with open(osp.join(cwd, log)) as f:
        return re.search(pattern, f.read()) is not None


def finish(args, cwd, env=None, timeout=900):
    began = time.time()
    proc = run_tool(args, cwd, timeout=timeout, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return time.time() - began


def scalars(cwd):
    """``{step: logged values}`` of every run in the work dir; a later
    run's entries replace an earlier run's."""
    steps = {}
    for path in sorted(glob.glob(osp.join(cwd, WORK, '*/vis_data/'
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                kind = 'train' if 'loss' in entry else 'val'
                steps[(kind, entry['step'])] = entry
    return steps


def last_run_steps(cwd):
    runs = sorted(glob.glob(osp.join(cwd, WORK, '*/vis_data/scalars.json')))
    with open(runs[-1]) as f:
        return [json.loads(line)['step'] for line in f if 'loss' in line]


def assert_same_run(cwd, baseline, resumed_steps):
    """The loss curve from the resume point, the final AP and the final
    weights equal the uninterrupted run's, bit for bit."""
    got, want = scalars(cwd), baseline['scalars']
    assert resumed_steps
    for step in resumed_steps:
        g, w = got[('train', step)], want[('train', step)]
        assert {k: g[k] for k in g if k not in ('time', 'data_time', 'eta')
                } == {k: w[k]
                      for k in w if k not in ('time', 'data_time', 'eta')}
    final = [k for k in want if k[0] == 'val']
    assert final and all(got[k]['coco/bbox_mAP'] == want[k]['coco/bbox_mAP']
                         and got[k]['coco/segm_mAP'] == want[k]
                         ['coco/segm_mAP'] for k in final)
    weights = torch.load(osp.join(cwd, WORK, 'epoch_3.pth'),
                         map_location='cpu')['state_dict']
    assert weights.keys() == baseline['weights'].keys()
    assert all(torch.equal(weights[k], baseline['weights'][k])
               for k in weights)


def uninterrupted(cwd, args, env=None):
    seconds = finish(args, cwd, env=env)
    weights = torch.load(osp.join(cwd, WORK, 'epoch_3.pth'),
                         map_location='cpu')['state_dict']
    return dict(seconds=seconds, scalars=scalars(cwd), weights=weights)


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
    """One uninterrupted 3-epoch run."""
    return uninterrupted(str(tmp_path_factory.mktemp('baseline')),
                         train_args(SHORT))


# one process


def test_same_seed_same_loss_curve(baseline, tmp_path):
    again = uninterrupted(str(tmp_path), train_args(SHORT))
    assert_same_run(str(tmp_path), baseline,
                    [step for kind, step in baseline['scalars']
                     if kind == 'train'])
    print(f"\nuninterrupted: {baseline['seconds']:.0f} s and "
          f"{again['seconds']:.0f} s")


def test_sigkill_mid_epoch_then_resume_is_exact(baseline, tmp_path):
    cwd = str(tmp_path)
    began = time.time()
    proc, out = start(train_args(SHORT), cwd, 'killed.log')
    wait_for(lambda: printed(cwd, 'killed.log', MID_EPOCH_2),
             proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out.close()
    killed = time.time() - began
    resumed = finish(train_args(SHORT, ['--resume']), cwd)
    steps = last_run_steps(cwd)
    assert steps[0] == 17  # epoch 2 again, from its first iteration
    assert_same_run(cwd, baseline, steps)
    print(f"\nmid-epoch kill: {killed:.0f} s killed + {resumed:.0f} s "
          f"resumed, against {baseline['seconds']:.0f} s uninterrupted: "
          f"{killed + resumed - baseline['seconds']:.0f} s lost")


def test_sigkill_mid_checkpoint_save_then_resume_is_exact(
        baseline, tmp_path):
    cwd = str(tmp_path)
    # The toy config plus a module that stops the write of epoch_2 halfway
    # and says so (the kill then lands mid-save, not by luck).
    (tmp_path / 'slow_save.py').write_text(SLOW_SAVE)
    (tmp_path / 'slow.py').write_text(
        f'_base_ = [{TOY_DET!r}]\ncustom_imports = dict(imports=['
        "'nonlocal_plugin', 'nonlocal_plugin.backbones', 'slow_save'], "
        'allow_failed_imports=False)\n')
    marker = str(tmp_path / 'saving')
    env = dict(PYTHONPATH=cwd, SLOW_SAVE_NAME='epoch_2',
               SLOW_SAVE_MARKER=marker)
    began = time.time()
    proc, out = start(train_args(SHORT, config=str(tmp_path / 'slow.py')),
                      cwd, 'killed.log', env)
    wait_for(lambda: osp.exists(marker), proc)  # half of epoch_2 written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out.close()
    killed = time.time() - began
    work = osp.join(cwd, WORK)
    with open(osp.join(work, 'last_checkpoint')) as f:
        named = f.read().strip()
    assert named.endswith('epoch_1.pth')
    assert torch.load(named, map_location='cpu')['meta']['epoch'] == 1
    # Nothing cut off carries a checkpoint's name.
    for path in glob.glob(osp.join(work, '*.pth')):
        torch.load(path, map_location='cpu')
    resumed = finish(train_args(SHORT, ['--resume']), cwd)
    steps = last_run_steps(cwd)
    assert steps[0] == 17
    assert_same_run(cwd, baseline, steps)
    print(f"\nmid-save kill: {killed:.0f} s killed + {resumed:.0f} s "
          f"resumed, against {baseline['seconds']:.0f} s uninterrupted: "
          f"{killed + resumed - baseline['seconds']:.0f} s lost")


# two processes


def workers(launcher_pid):
    """``{rank: pid}`` of the processes torchrun started."""
    found = {}
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            pid = int(stat.split('/')[2])
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = dict(
                    item.split(b'=', 1) for item in f.read().split(b'\0')
                    if b'=' in item)
            found[int(env[b'RANK'])] = pid
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return found


def test_dist_run_losing_a_process_stops_cleanly_and_resumes_exactly(
        tmp_path_factory):
    first = str(tmp_path_factory.mktemp('dist_whole'))
    env = dict(PYTHON=sys.executable, PORT=str(free_port()))
    whole = uninterrupted(first, dist_args(DIST), env=dict(env))
    cwd = str(tmp_path_factory.mktemp('dist_cut'))
    env['PORT'] = str(free_port())
    began = time.time()
    proc, out = start(dist_args(DIST), cwd, 'killed.log', env)
    wait_for(lambda: printed(cwd, 'killed.log', MID_EPOCH_2),
             proc)
    os.kill(workers(proc.pid)[1], signal.SIGKILL)
    try:
        proc.wait(timeout=180)  # the survivor must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
    out.close()
    killed = time.time() - began
    with open(osp.join(cwd, 'killed.log')) as f:
        log = f.read()
    assert proc.returncode != 0
    survivor = [line for line in log.splitlines()
                if line.startswith('error: rank 0 of 2')]
    assert len(survivor) == 1, log[-4000:]
    assert '[rank0]:' not in log, log[-4000:]  # no traceback of rank 0
    env['PORT'] = str(free_port())
    resumed = finish(dist_args(DIST, ['--resume']), cwd, env=env)
    steps = last_run_steps(cwd)
    assert steps[0] == 17
    assert_same_run(cwd, whole, steps)
    print(f'\n2 processes, one killed: {killed:.0f} s killed + '
          f"{resumed:.0f} s resumed, against {whole['seconds']:.0f} s "
          f"uninterrupted: {killed + resumed - whole['seconds']:.0f} s lost;"
          f' survivor: {survivor[0][:120]}')
