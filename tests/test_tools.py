"""The tools: bad input ends in one message, the toy datasets, and (marked
slow) short end-to-end runs of train, test, dist_train.sh and resume."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import DefaultScope

from nonlocal_plugin.apis import SetupError, check_checkpoints, setup_launcher
from nonlocal_plugin.datasets import ensure_toy_dataset, make_toy_coco
from nonlocal_plugin.datasets.toy import (
    CITYSCAPES_TRAIN_IDS,
    CUE_COLOURS,
    SEG_BLOB_CLASSES,
    TOY_COCO_CLASSES,
    make_toy_cityscapes,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
TOY_DET = osp.join(ROOT, 'configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py')
TOY_SEG = osp.join(ROOT, 'configs/toy/fcn_r18-d8-nl_toy-cityscapes.py')
SMALL_COCO = dict(num_train=6, num_val=3, img_size=96)
SMALL_CITYSCAPES = dict(num_train=4, num_val=2, img_size=(64, 128))

# helper functions


def run_tool(args, cwd, timeout=900, env=None):
    """Runs a tool in ``cwd``; the completed process (text output)."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def train(cwd, config, *options, timeout=900):
    return run_tool(
        [sys.executable, osp.join(TOOLS, 'train.py'), config, *options],
        cwd, timeout)


def dist_train(cwd, config, *cfg_options, nproc=2):
    """``tools/dist_train.sh config nproc`` on a free port."""
    return run_tool(
        ['bash', osp.join(TOOLS, 'dist_train.sh'), config, str(nproc),
         '--cfg-options', *cfg_options],
        cwd,
        env=dict(PYTHON=sys.executable, PORT=str(free_port())))


def one_error(proc):
    """The single ``error:`` line of a failed tool, checked for no traceback.
    """
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def tree_bytes(root):
    """{relative path: bytes} of every file under ``root``."""
    out = {}
    for path in sorted(glob.glob(osp.join(root, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def cue_of(img_bgr):
    """(side, colour name) of the cue bar of a toy image."""
    for side, column in (('left', 0), ('right', img_bgr.shape[1] - 1)):
        rgb = tuple(int(v) for v in img_bgr[img_bgr.shape[0] // 2,
                                            column][::-1])
        for name, colour in CUE_COLOURS.items():
            if rgb == colour:
                return side, name
    raise AssertionError('no cue bar found')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# bad input


def test_missing_data_is_one_message(tmp_path):
    proc = train(tmp_path, osp.join(ROOT, 'configs/mask_rcnn_r50_nl.py'))
    line = one_error(proc)
    assert "'data/coco/'" in line and 'does not exist' in line
    assert 'Download COCO 2017' in line and '--cfg-options' in line
    assert 'configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py' in line


def test_missing_cityscapes_is_one_message(tmp_path):
    proc = train(tmp_path,
                 osp.join(ROOT, 'configs/fcn_r50_nl_cityscapes.py'))
    line = one_error(proc)
    assert "'data/cityscapes/'" in line and 'Cityscapes' in line
    assert 'configs/toy/fcn_r18-d8-nl_toy-cityscapes.py' in line


def test_unreachable_pretrained_is_one_message(tmp_path):
    data = tmp_path / 'data' / 'coco'
    (data / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (data / split).mkdir()
        (data / 'annotations' / f'instances_{split}.json').write_text('{}')
    url = 'https://weights.nonexistent.invalid/resnet50.pth'
    proc = run_tool([
        sys.executable, osp.join(TOOLS, 'train.py'),
        osp.join(ROOT, 'configs/mask_rcnn_r50_nl.py'), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={url}'
    ], tmp_path, env=dict(TORCH_HOME=str(tmp_path / 'torch')))
    line = one_error(proc)
    assert url in line and 'unreachable' in line
    assert '--cfg-options model.backbone.init_cfg=None' in line


def test_torchvision_name_without_cache_or_network(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cfg = Config(dict(model=dict(backbone=dict(init_cfg=dict(
        type='Pretrained', checkpoint='torchvision://resnet50')))))
    from nonlocal_plugin.apis import checks
    monkeypatch.setattr(checks, 'reachable', lambda url: 'no network')
    with pytest.raises(SetupError, match='download.pytorch.org'):
        check_checkpoints(cfg)
    # A cached download is enough.
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    cached = checks.cached_path(checks.resolve_checkpoint(checkpoint))
    os.makedirs(osp.dirname(cached))
    open(cached, 'wb').close()
    check_checkpoints(cfg)


def test_missing_local_checkpoint_is_one_message(tmp_path):
    proc = run_tool([
        sys.executable, osp.join(TOOLS, 'test.py'), TOY_DET,
        str(tmp_path / 'nope.pth'), '--cfg-options',
        'toy_dataset.num_train=6', 'toy_dataset.num_val=3'
    ], tmp_path)
    assert 'nope.pth' in one_error(proc)


def test_missing_config_is_one_message(tmp_path):
    proc = train(tmp_path, 'configs/no_such_config.py')
    assert 'no_such_config.py' in one_error(proc)


def test_pytorch_launcher_outside_torchrun_is_one_message(tmp_path):
    env = {key: '' for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR')}
    proc = run_tool([
        sys.executable, '-c',
        'import os\n'
        'for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):\n'
        '    os.environ.pop(k, None)\n'
        'from nonlocal_plugin.apis.cli import train_main\n'
        f'train_main([{TOY_DET!r}, "--launcher", "pytorch", "--cfg-options",'
        ' "toy_dataset.num_train=6", "toy_dataset.num_val=3"])'
    ], tmp_path, env=env)
    if torch.cuda.is_available():
        pytest.skip('with CUDA mmengine launches')
    assert 'torchrun' in one_error(proc)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_amp_on_cpu_is_one_message(tmp_path):
    proc = train(tmp_path, TOY_DET, '--amp', '--cfg-options',
                 'toy_dataset.num_train=6', 'toy_dataset.num_val=3')
    assert 'needs a CUDA GPU' in one_error(proc)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_cpu_launcher_uses_gloo_and_cpu_sync_bn(monkeypatch):
    cfg = Config.fromfile(TOY_SEG)
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    for key, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                           MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    try:
        setup_launcher(cfg, 'pytorch')
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cfg.launcher == 'pytorch'
    assert cfg.model_wrapper_cfg.device_ids is None
    # Still synchronised batch norm, through gloo.
    for norm_cfg in (cfg.model.backbone.norm_cfg,
                     cfg.model.decode_head.norm_cfg):
        assert norm_cfg.type == 'nonlocal_plugin.GlooSyncBN'


# toy datasets


def test_toy_coco_is_deterministic(tmp_path):
    first = tree_bytes(make_toy_coco(str(tmp_path / 'a'), seed=3,
                                     **SMALL_COCO))
    again = tree_bytes(make_toy_coco(str(tmp_path / 'b'), seed=3,
                                     **SMALL_COCO))
    other = tree_bytes(make_toy_coco(str(tmp_path / 'c'), seed=4,
                                     **SMALL_COCO))
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_toy_cityscapes_is_deterministic(tmp_path):
    first = tree_bytes(
        make_toy_cityscapes(str(tmp_path / 'a'), seed=3, **SMALL_CITYSCAPES))
    again = tree_bytes(
        make_toy_cityscapes(str(tmp_path / 'b'), seed=3, **SMALL_CITYSCAPES))
    assert first == again


def test_toy_coco_class_is_the_far_cue(tmp_path):
    root = make_toy_coco(str(tmp_path), seed=0, num_train=24, num_val=2,
                         img_size=128)
    with open(osp.join(root, 'annotations/instances_train2017.json')) as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    assert tuple(names[i + 1] for i in range(3)) == TOY_COCO_CLASSES
    images = {i['id']: i for i in coco['images']}
    seen = set()
    for ann in coco['annotations']:
        img = cv2.imread(
            osp.join(root, 'train2017', images[ann['image_id']]['file_name']))
        side, colour = cue_of(img)
        assert names[ann['category_id']] == f'{colour}_cue'
        seen.add(colour)
        x, y, w, h = ann['bbox']
        gap = x if side == 'left' else 128 - (x + w)
        assert gap >= 54, 'an object is near its cue'
        # The object itself is gray, whatever its class.
        cx, cy = int(x + w / 2), int(y + h / 2)
        b, g, r = (int(v) for v in img[cy, cx])
        assert b == g == r
    assert seen == set(CUE_COLOURS)


def test_toy_cityscapes_labels_follow_the_far_cue(tmp_path):
    root = make_toy_cityscapes(str(tmp_path), seed=0, num_train=12,
                               num_val=2)
    pairs = sorted(
        glob.glob(osp.join(root, 'leftImg8bit/train/*/*_leftImg8bit.png')))
    assert len(pairs) == 12
    blob_ids = {CITYSCAPES_TRAIN_IDS[c] for c in SEG_BLOB_CLASSES}
    for path in pairs:
        img = cv2.imread(path)
        label = cv2.imread(
            path.replace('leftImg8bit', 'gtFine', 1).replace(
                '_leftImg8bit.png', '_gtFine_labelTrainIds.png'),
            cv2.IMREAD_UNCHANGED)
        side, colour = cue_of(img)
        present = set(np.unique(label)) & blob_ids
        expected = CITYSCAPES_TRAIN_IDS[SEG_BLOB_CLASSES[list(
            CUE_COLOURS).index(colour)]]
        assert present == {expected}
        cols = np.nonzero((label == expected).any(axis=0))[0]
        near = cols.min() if side == 'left' else label.shape[1] - cols.max()
        assert near >= label.shape[1] // 2 - 2


def test_ensure_builds_once_and_refuses_other_options(tmp_path):
    root = str(tmp_path / 'toy')
    assert ensure_toy_dataset('coco', root, seed=0, **SMALL_COCO)
    assert not ensure_toy_dataset('coco', root, seed=0, **SMALL_COCO)
    with pytest.raises(ValueError, match='delete'):
        ensure_toy_dataset('coco', root, seed=1, **SMALL_COCO)
    assert not [p for p in os.listdir(tmp_path) if '.tmp-' in p]


def test_toy_coco_loads_in_mmdet(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = make_toy_coco(str(tmp_path), seed=0, **SMALL_COCO)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs')
    ]
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(
            data_root=root,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            metainfo=dict(classes=TOY_COCO_CLASSES),
            pipeline=pipeline)
        sample = dataset[0]
    assert len(dataset) == SMALL_COCO['num_train']
    instances = sample['data_samples'].gt_instances
    assert len(instances) >= 1
    assert instances.masks.masks.shape[1:] == (96, 96)
    assert int(instances.labels.max()) < len(TOY_COCO_CLASSES)


def test_toy_cityscapes_loads_in_mmseg(tmp_path):
    from mmseg.datasets import CityscapesDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = make_toy_cityscapes(str(tmp_path), seed=0, **SMALL_CITYSCAPES)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = CityscapesDataset(
            data_root=root,
            data_prefix=dict(
                img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
            pipeline=pipeline)
        seg = dataset[0]['data_samples'].gt_sem_seg.data
    assert len(dataset) == SMALL_CITYSCAPES['num_val']
    assert seg.shape[1:] == SMALL_CITYSCAPES['img_size']
    assert set(seg.unique().tolist()) <= set(CITYSCAPES_TRAIN_IDS.values())


# end to end (slow)

TINY_DET = ('toy_dataset.num_train=16', 'toy_dataset.num_val=8',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1')
TINY_SEG = ('toy_dataset.num_train=8', 'toy_dataset.num_val=4',
            'train_cfg.max_iters=4', 'train_cfg.val_interval=4')


@pytest.mark.slow
def test_toy_mask_rcnn_trains_and_evaluates(tmp_path):
    proc = train(tmp_path, TOY_DET, '--cfg-options', *TINY_DET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert 'coco/bbox_mAP:' in out and 'coco/segm_mAP:' in out
    checkpoint = osp.join(tmp_path, 'work_dirs',
                          'mask-rcnn_r18-nl-c4_fpn_toy-coco', 'epoch_1.pth')
    test = run_tool([
        sys.executable, osp.join(TOOLS, 'test.py'), TOY_DET, checkpoint,
        '--cfg-options', *TINY_DET[:2]
    ], tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'coco/segm_mAP:' in test.stdout + test.stderr


@pytest.mark.slow
def test_toy_fcn_trains_and_reports_miou(tmp_path):
    proc = train(tmp_path, TOY_SEG, '--cfg-options', *TINY_SEG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'mIoU' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dist_train_two_processes_on_cpu(tmp_path):
    proc = dist_train(tmp_path, TOY_DET, *TINY_DET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert 'coco/bbox_mAP:' in out
    assert 'Distributed training: True' in out
    assert 'GPU number: 2' in out  # mmengine's name for the world size


@pytest.mark.slow
def test_dist_train_keeps_sync_bn_synchronised_on_cpu(tmp_path):
    # The toy FCN has mmseg's SyncBN: on 2 CPU processes it is built as
    # GlooSyncBN (see test_sync_bn.py for its numbers).
    proc = dist_train(tmp_path, TOY_SEG, *TINY_SEG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert 'built as nonlocal_plugin.GlooSyncBN' in out
    assert 'mIoU' in out


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tmp_path):
    first = train(tmp_path, TOY_DET, '--cfg-options', *TINY_DET)
    assert first.returncode == 0, first.stderr[-3000:]
    more = ('train_cfg.max_epochs=2', 'train_cfg.val_interval=2')
    second = train(tmp_path, TOY_DET, '--resume', '--cfg-options',
                   *TINY_DET[:2], *more)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train) [1]' not in out and 'Epoch(train) [2]' in out
