"""tools/ablate.py: grid files, jobs, dry-run, collect, plot, launchers."""
import csv
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from test_tools import ROOT, TOOLS, TOY_DET

from nonlocal_plugin.ablation.cli import ablate_main
from nonlocal_plugin.ablation.collect import collect, markdown, write_csv
from nonlocal_plugin.ablation.grid import (
    grid_from_configs,
    load_grid,
    row_config,
    row_config_text,
)
from nonlocal_plugin.ablation.jobs import make_jobs

TOY_BASE = osp.join(ROOT, 'configs/toy/mask-rcnn_r18_fpn_toy-coco.py')
GRIDS = sorted(glob.glob(osp.join(ROOT, 'configs', 'ablations', '*.py')))
NL = dict(type='nonlocal_plugin.NonLocal2D', reduction=2)
ROW = dict(
    name='nl', config=TOY_BASE,
    overrides=dict(model=dict(backbone=dict(between_blocks=[
        dict(cfg=NL, stages=(False, False, True, False), after=(-2, ))]))),
    published=dict(bbox_AP=40.0, source='a paper, Table 1'))
# Two iterations of a 4-image toy set: a job in seconds.
TINY = ('toy_dataset.num_train=4', 'toy_dataset.num_val=2',
        'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', 'default_hooks.logger.interval=1')

# helper functions


def write_grid(path, rows, **extra):
    lines = ["title = 'test grid'", 'scale = 100.',
             "metrics = dict(bbox_AP='coco/bbox_mAP', "
             "mask_AP='coco/segm_mAP')",
             f'rows = {rows!r}']
    lines += [f'{k} = {v!r}' for k, v in extra.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def fake_job_output(job, bbox, segm, times=(0.5, 0.4, 0.6), rss=700.):
    """What a finished job leaves in its work dir."""
    log_dir = osp.join(job.work_dir, '20260101_000000', 'vis_data')
    os.makedirs(log_dir)
    with open(osp.join(log_dir, 'scalars.json'), 'w') as f:
        for i, t in enumerate(times):
            f.write(json.dumps(dict(loss=1., time=t, iter=i + 1)) + '\n')
    job.write_json('train.json', dict(wall_s=1., peak_rss_mib=rss))
    job.write_json('result.json', dict(metrics={
        'coco/bbox_mAP': bbox, 'coco/segm_mAP': segm}))


# grid files


@pytest.mark.parametrize('path', GRIDS, ids=osp.basename)
def test_every_grid_loads_and_dry_runs(path, capsys):
    grid = load_grid(path)
    assert grid.rows and grid.metrics
    assert ablate_main([path, '--dry-run', '--seeds', '0', '1']) == 0
    out = capsys.readouterr().out
    for row in grid.rows:
        assert f'\n{row.name}' in out
    # every job: one train and one test command
    assert out.count('tools/train.py') == 2 * len(grid.rows)
    assert out.count('tools/test.py') == 2 * len(grid.rows)


def test_row_config_merges_the_overrides(tmp_path):
    grid = load_grid(write_grid(tmp_path / 'g.py', [ROW]))
    cfg = row_config(grid.rows[0])
    entry = cfg.model.backbone.between_blocks[0]
    assert entry.cfg.type == 'nonlocal_plugin.NonLocal2D'
    assert entry.after == (-2, )
    assert cfg.train_cfg.max_epochs == 12  # the base's
    text = row_config_text(grid.rows[0], grid.path)
    assert f"_base_ = [{TOY_BASE!r}]" in text


@pytest.mark.parametrize('change, error', [
    (dict(name='a b'), r"\['name'\] must be"),
    (dict(config='missing.py'), 'does not exist'),
    (dict(colour='red'), "unknown keys \\['colour'\\]"),
    (dict(overrides=[1]), "'overrides' must be a dict"),
    (dict(published=dict(bbox_AP=1.)), 'needs a source'),
    (dict(published=dict(source='x')), 'has no number'),
    (dict(published=dict(source='x', verified=False, bbox_AP=1.)),
     'not verified but has numbers'),
    (dict(published=dict(source='x', box=1.)), "unknown keys \\['box'\\]"),
    (dict(published=dict(source='x', bbox_AP='39')), 'must be a number'),
])
def test_bad_rows_name_the_problem(tmp_path, change, error):
    path = write_grid(tmp_path / 'g.py', [dict(ROW, **change)])
    with pytest.raises((ValueError, TypeError), match=error):
        load_grid(path)


def test_bad_grids_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match='row names must be unique'):
        load_grid(write_grid(tmp_path / 'a.py', [ROW, ROW]))
    with pytest.raises(ValueError, match=r"unknown keys \['metric'\]"):
        load_grid(write_grid(tmp_path / 'b.py', [ROW], metric='x'))
    with pytest.raises(ValueError, match='input_shape must be'):
        load_grid(write_grid(tmp_path / 'c.py', [ROW], input_shape=(96, )))


def test_a_list_of_configs_is_a_grid():
    grid = grid_from_configs([TOY_DET])
    assert [r.name for r in grid.rows] == ['mask-rcnn_r18-nl-c4_fpn_toy-coco']
    assert grid.metrics['bbox_AP'] == 'coco/bbox_mAP' and grid.scale == 100


# jobs and their states


def test_job_states_pick_the_commands(tmp_path):
    grid = load_grid(write_grid(tmp_path / 'g.py', [ROW]))
    job, = make_jobs(grid, [3], str(tmp_path / 'w'), ['a.b=1'])
    assert job.state() == 'new'
    command = job.train_command('python')
    assert '--resume' not in command
    assert command[-3:] == ['--cfg-options', 'randomness.seed=3', 'a.b=1']
    os.makedirs(job.work_dir)
    with open(job.path('last_checkpoint'), 'w') as f:
        f.write('/x/epoch_4.pth')
    assert job.state() == 'interrupted'
    assert '--resume' in job.train_command('python')
    assert job.test_command('python', checkpoint=job.checkpoint())[3] == (
        '/x/epoch_4.pth')
    job.write_json('train.json', {})
    assert job.state() == 'trained'
    job.write_json('result.json', {})
    assert job.state() == 'finished'
    dist = job.train_command('python', 'pytorch', 8)
    assert dist[1].endswith('dist_train.sh') and dist[3] == '8'


def test_seeds_and_rows_are_checked(tmp_path):
    grid = load_grid(write_grid(tmp_path / 'g.py', [ROW]))
    with pytest.raises(ValueError, match='twice'):
        make_jobs(grid, [0, 0], str(tmp_path))
    with pytest.raises(ValueError, match="no row 'gc'"):
        make_jobs(grid, [0], str(tmp_path), rows=['gc'])


# collect


def test_collect_means_stds_and_published(tmp_path):
    rows = [ROW, dict(ROW, name='base', overrides={},
                      published=dict(source='Table 2', verified=False)),
            dict(ROW, name='toy', published=None, note='toy data')]
    grid = load_grid(write_grid(tmp_path / 'g.py', rows))
    jobs = make_jobs(grid, [0, 1], str(tmp_path / 'w'))
    fake_job_output(jobs[0], 0.70, 0.80)
    fake_job_output(jobs[1], 0.74, 0.84, times=(0.7, 0.8, 0.9), rss=900.)
    fake_job_output(jobs[2], 0.30, 0.40)  # base: seed 1 not run
    results = collect(grid, jobs, costs=False)
    nl, base, toy = results
    assert nl.mean('bbox_AP') == pytest.approx(72.0)
    assert nl.std('bbox_AP') == pytest.approx(2 * 2 ** 0.5)
    assert nl.step_time == pytest.approx((0.5 + 0.8) / 2)
    assert nl.peak_mem == 900.
    assert base.seeds == [0] and base.std('bbox_AP') is None
    assert toy.seeds == []
    table = markdown(grid, results)
    assert '| nl | 0,1 | 72.0 ± 2.8 | 82.0 ± 2.8 | 40.0 | n/a | a paper' in (
        table)
    assert '| base | 0 | 30.0 | 40.0 | not verified | not verified |' in table
    assert '| toy | none | n/a | n/a | – | – | toy data |' in table
    write_csv(str(tmp_path / 'a.csv'), grid, results)
    with open(tmp_path / 'a.csv') as f:
        lines = list(csv.DictReader(f))
    nl_lines = [line for line in lines if line['row'] == 'nl']
    assert [line['seed'] for line in nl_lines] == ['0', '1', 'mean', 'std']
    assert float(nl_lines[2]['bbox_AP']) == pytest.approx(72.0)
    assert nl_lines[0]['published_bbox_AP'] == '40.0'


def test_collect_counts_params_and_flops_of_the_blocks(tmp_path):
    rows = [ROW, dict(ROW, name='base', overrides={})]
    grid = load_grid(write_grid(tmp_path / 'g.py', rows,
                                input_shape=(96, 256)))
    jobs = make_jobs(grid, [0], str(tmp_path / 'w'))
    nl, base = collect(grid, jobs)
    # NL at c4 of the toy R18 (C = 64, C' = 32): theta, phi, g (64 -> 32)
    # and the output conv (32 -> 64; no norm), all with a bias.
    assert nl.costs['block_params'] == 3 * (64 * 32 + 32) + 32 * 64 + 64
    assert base.costs['block_params'] == 0
    assert nl.costs['params'] - base.costs['params'] == (
        nl.costs['block_params'])
    assert nl.costs['flops'] - base.costs['flops'] == (
        nl.costs['block_flops']) > 0
    assert base.costs['block_flops'] == 0
    assert osp.isfile(osp.join(tmp_path, 'w', 'nl', 'costs.json'))


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip('matplotlib')
    grid = load_grid(write_grid(tmp_path / 'g.py', [ROW]))
    jobs = make_jobs(grid, [0, 1], str(tmp_path / 'w'))
    for job, ap in zip(jobs, (0.7, 0.74)):
        fake_job_output(job, ap, ap)
    assert ablate_main([grid.path, '--collect', '--plot', '--no-costs',
                        '--seeds', '0', '1', '--work-root',
                        str(tmp_path / 'w')]) == 0
    with open(tmp_path / 'w' / 'ablation.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


# launchers


def test_slurm_submits_one_job_per_row_and_seed(tmp_path, monkeypatch):
    calls = tmp_path / 'calls'
    fake = tmp_path / 'bin' / 'sbatch'
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho Submitted\n')
    fake.chmod(0o755)
    monkeypatch.setenv('PATH', f'{fake.parent}{os.pathsep}'
                       f"{os.environ['PATH']}")
    grid = load_grid(write_grid(tmp_path / 'g.py',
                                [ROW, dict(ROW, name='b')]))
    work = tmp_path / 'w'
    fake_job_output(make_jobs(grid, [1], str(work), rows=['b'])[0], .1, .1)
    assert ablate_main([grid.path, '--launcher', 'slurm', '--gpus', '8',
                        '--seeds', '0', '1', '--work-root', str(work)]) == 0
    scripts = calls.read_text().split()
    assert len(scripts) == 3  # b seed 1 was finished
    text = open(scripts[0]).read()
    assert '#SBATCH --gres=gpu:8' in text and '--launcher slurm' in text
    assert 'randomness.seed=0' in text and 'srun' in text


def test_bad_options_give_one_line(tmp_path):
    with pytest.raises(SystemExit, match='--jobs runs jobs side by side'):
        ablate_main([TOY_DET, '--jobs', '2', '--launcher', 'slurm'])
    with pytest.raises(SystemExit, match='error: configs not found'):
        ablate_main([str(tmp_path / 'missing.py'), 'x.py', '--dry-run'])


@pytest.mark.slow
def test_run_skips_finished_and_resumes_interrupted(tmp_path):
    """Two rows, tiny schedule: run, lose results by hand, run again."""
    grid = write_grid(tmp_path / 'g.py', [ROW, dict(ROW, name='base',
                                                    overrides={})])
    work = tmp_path / 'w'
    command = [sys.executable, osp.join(TOOLS, 'ablate.py'), grid,
               '--work-root', str(work), '--no-costs', '--cfg-options',
               *TINY]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert '[2/2] base seed 0: done' in first.stdout
    assert (work / 'ablation.md').is_file()
    # the base row's test is lost: it is tested again, not trained
    os.remove(work / 'base' / 'seed0' / 'result.json')
    # the nl row looks interrupted (a checkpoint, no train.json): it resumes
    os.remove(work / 'nl' / 'seed0' / 'result.json')
    os.remove(work / 'nl' / 'seed0' / 'train.json')
    second = subprocess.run(command, cwd=tmp_path, capture_output=True,
                            text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert 'nl seed 0: resumed and done' in second.stdout
    assert 'base seed 0: done' in second.stdout
    with open(work / 'base' / 'seed0' / 'train.out') as f:
        assert f.read().count('$ ') == 1  # trained once
    with open(work / 'nl' / 'seed0' / 'train.out') as f:
        commands = [line for line in f if line.startswith('$ ')]
    assert len(commands) == 2 and '--resume' in commands[1]
    third = subprocess.run(command, cwd=tmp_path, capture_output=True,
                           text=True)
    assert third.stdout.count('finished before, skipped') == 2


def test_readme_ablate_commands_name_existing_files():
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    lines = [line for line in readme.splitlines()
             if line.startswith('python tools/ablate.py')]
    assert len(lines) >= 4
    for line in lines:
        paths = [word for word in line.split() if word.endswith('.py')]
        for path in paths[1:]:
            assert osp.isfile(osp.join(ROOT, path)), line


# The toy grid: one block, at c4 (after residual block 0 of the R18's
# 2-block res4), the only difference between a task's rows.
TOY_ROWS = {
    'baseline': None,
    'nl-eg': ('NonLocal2D', dict(mode='embedded_gaussian')),
    'nl-dot': ('NonLocal2D', dict(mode='dot_product')),
    'gc-r4': ('ContextBlock', dict(ratio=0.25, pooling_type='att',
                                   fusion_types=('channel_add', ))),
    'snl': ('SimplifiedNonLocal2D', dict(ratio=None)),
    'dnl': ('DisentangledNonLocalDet2D', dict(use_pairwise=True,
                                              use_unary=True)),
    'dnl-pairwise': ('DisentangledNonLocalDet2D',
                     dict(use_pairwise=True, use_unary=False)),
    'dnl-unary': ('DisentangledNonLocalDet2D',
                  dict(use_pairwise=False, use_unary=True)),
}


@pytest.mark.parametrize('task', ['cue', 'matching'])
@pytest.mark.parametrize('block', sorted(TOY_ROWS))
def test_toy_grid_rows_differ_in_their_block_only(task, block):
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    from nonlocal_plugin.ablation.grid import plain
    grid = load_grid(osp.join(ROOT, 'configs', 'ablations',
                              'toy-coco_two-tasks.py'))
    cfg = row_config(grid.row(f'{task}-{block}'))
    assert cfg.toy_dataset.kind == {'cue': 'coco',
                                    'matching': 'coco_matching'}[task]
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(ConfigDict(plain(cfg.model.to_dict())))
    found = [(name, module) for name, module in model.backbone.named_modules()
             if type(module).__module__.startswith('nonlocal_plugin.blocks')]
    if TOY_ROWS[block] is None:
        assert found == []
        return
    cls, options = TOY_ROWS[block]
    (name, module), = found
    assert name.startswith('between_layer3.after0_')
    assert type(module).__name__ == cls and module.in_channels == 64
    assert {k: getattr(module, k) for k in options} == options
