"""nonlocal_plugin.InsertBlocks: the whole backbone traces and exports to
ONNX with its blocks, trains under DDP with synchronised batch norm on two
CPU processes, and the toy RegNet config trains and tests with the tools."""
import inspect
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import exactly_zero_grads, rel_err
from torch.nn.parallel import DistributedDataParallel

from nonlocal_plugin.backbones import insert_blocks

# helpers

NL = dict(type='nonlocal_plugin.NonLocal2D')
GC = dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4)
BACKBONE = dict(type='mmdet.ResNet', depth=50, base_channels=8,
                stem_channels=8)
BLOCKS = [dict(cfg=NL, before='layer3.-1'), dict(cfg=GC, after='layer2.0.bn3')]


def model_with_active_blocks(**options):
    torch.manual_seed(0)
    model = insert_blocks(dict(BACKBONE, **options), blocks=BLOCKS)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith('between'):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model


def image(batch=1, size=64, seed=0):
    return torch.randn(batch, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


def onnx_export(model, x, path, **options):
    """torch.onnx.export; ``dynamo`` only where this torch has it."""
    if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
        options.pop('dynamo', None)
    torch.onnx.export(model, (x, ), path, **options)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# tracing and export


def test_jit_trace_runs_the_blocks_and_generalises():
    model = model_with_active_blocks()
    model.eval()
    x, other = image(), image(batch=2, size=96, seed=1)
    with torch.no_grad():
        expected, expected_other = model(x), model(other)
        # check_trace retraces and compares graph text, which differs in
        # torch's mangled class names here; the outputs are checked below.
        traced = torch.jit.trace(model, x, check_trace=False)
        plain = insert_blocks(BACKBONE, blocks=[])
        plain.eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        assert not torch.allclose(plain(x)[2], expected[2])  # blocks act
        for got, want in zip(traced(x), expected):
            torch.testing.assert_close(got, want)
        for got, want in zip(traced(other), expected_other):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize('dynamo', [
    False, pytest.param(True, marks=pytest.mark.slow)
], ids=['torchscript', 'dynamo'])
def test_onnx_export_matches_eager(tmp_path, dynamo):
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    model = model_with_active_blocks()
    model.eval()
    x = image()
    with torch.no_grad():
        expected = model(x)
    path = str(tmp_path / 'backbone.onnx')
    onnx_export(model, x, path, dynamo=dynamo)
    session = ort.InferenceSession(path)
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4,
                                   atol=1e-4)


# DDP with synchronised batch norm

WORLD = 2
SYNC_BN = dict(type='nonlocal_plugin.GlooSyncBN', requires_grad=True)


def _ddp_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = model_with_active_blocks(norm_cfg=SYNC_BN, norm_eval=False)
        ddp = DistributedDataParallel(model, device_ids=None)
        x = image(batch=2 * WORLD)[rank * 2:rank * 2 + 2]
        sum(out.sum() for out in ddp(x)).backward()
        grads = {n: p.grad for n, p in model.named_parameters()
                 if n.startswith('between')}
        torch.save(grads, osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_sync_bn_on_two_cpu_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    # One process with BN over the whole batch: DDP averages the gradients
    # of the two halves, whose sum is this one.
    model = model_with_active_blocks(norm_eval=False)
    model.train()
    sum(out.sum() for out in model(image(batch=2 * WORLD))).backward()
    for name, container in model.named_children():
        if not name.startswith('between'):
            continue
        for key, block in container.items():
            zero = exactly_zero_grads(block)  # rounding noise either way
            scale = max(p.grad.abs().max().item()
                        for p in block.parameters())
            for p_name, param in block.named_parameters():
                full = f'{name}.{key}.{p_name}'
                for result in results:
                    got = result[full] * WORLD
                    if p_name in zero:
                        assert (got - param.grad).abs().max() <= 1e-3 * scale
                    else:
                        assert param.grad.any(), full
                        assert rel_err(got, param.grad) <= 1e-3, full


# end to end (slow)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOY = osp.join(ROOT, 'configs/toy/mask-rcnn_regnet-nl-c4_fpn_toy-coco.py')
TINY = ('toy_dataset.num_train=16', 'toy_dataset.num_val=8',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1')


def tool(cwd, name, *args):
    return subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', name), *args], cwd=cwd,
        capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHONWARNINGS='ignore'))


@pytest.mark.slow
def test_toy_regnet_with_an_inserted_block_trains_and_tests(tmp_path):
    proc = tool(tmp_path, 'train.py', TOY, '--cfg-options', *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/segm_mAP:' in proc.stdout + proc.stderr
    checkpoint = osp.join(tmp_path, 'work_dirs',
                          'mask-rcnn_regnet-nl-c4_fpn_toy-coco',
                          'epoch_1.pth')
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    assert any(k.startswith('backbone.between_layer3.after2_nonlocal_block.')
               for k in state['state_dict'])
    test = tool(tmp_path, 'test.py', TOY, checkpoint, '--cfg-options',
                *TINY[:2])
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'coco/segm_mAP:' in test.stdout + test.stderr
