"""GlooSyncBatchNorm: two gloo processes on CPU equal one BN over the whole
batch, forward, backward and running statistics."""
import os
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nonlocal_plugin.ops import GlooSyncBatchNorm
from nonlocal_plugin.registry import MODELS

WORLD = 2
CHANNELS = 5

# helper functions


def batch():
    """The global batch (uneven per-channel statistics) and output weights.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * WORLD, CHANNELS, 6, 7, generator=gen)
    x = x * torch.arange(1, CHANNELS + 1).view(1, -1, 1, 1) + 3
    return x, torch.randn(x.shape, generator=gen)


def layer():
    torch.manual_seed(1)
    norm = GlooSyncBatchNorm(CHANNELS, momentum=0.3)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.uniform_(norm.bias, -1, 1)
    return norm


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        x, grad_out = batch()
        part = slice(rank * 2, rank * 2 + 2)
        x = x[part].clone().requires_grad_()
        norm = layer().train()
        out = norm(x)
        # Each process backpropagates its own part of the global loss.
        (out * grad_out[part]).sum().backward()
        grads = {k: p.grad for k, p in norm.named_parameters()}
        torch.save(
            dict(out=out.detach(), grad_x=x.grad, grads=grads,
                 buffers=dict(norm.named_buffers())),
            osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# tests


def test_two_cpu_processes_equal_bn_over_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]

    x, grad_out = batch()
    x.requires_grad_()
    reference = nn.BatchNorm2d(CHANNELS, momentum=0.3)
    reference.load_state_dict(layer().state_dict())
    out = reference(x)
    (out * grad_out).sum().backward()

    torch.testing.assert_close(
        torch.cat([r['out'] for r in results]), out.detach(), rtol=1e-5,
        atol=1e-5)
    torch.testing.assert_close(
        torch.cat([r['grad_x'] for r in results]), x.grad, rtol=1e-4,
        atol=1e-5)
    for name, param in reference.named_parameters():
        # DDP would average these over processes; summed they are the
        # gradient of the global loss.
        total = sum(r['grads'][name] for r in results)
        torch.testing.assert_close(total, param.grad, rtol=1e-4, atol=1e-4)
    for result in results:  # every process holds the global statistics
        for name, buf in reference.named_buffers():
            torch.testing.assert_close(result['buffers'][name], buf)


@pytest.mark.parametrize('training', [True, False])
def test_one_process_is_plain_bn(training):
    x, _ = batch()
    norm = layer().train(training)
    reference = nn.BatchNorm2d(CHANNELS, momentum=0.3).train(training)
    reference.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), reference(x))
    torch.testing.assert_close(norm.running_var, reference.running_var)


def test_builds_from_a_norm_cfg_with_bn_names():
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        name, norm = build_norm_layer(
            dict(type='nonlocal_plugin.GlooSyncBN', requires_grad=True), 8)
    assert name == 'bn' and type(norm) is GlooSyncBatchNorm
    # norm_eval and frozen stages find it as batch norm.
    assert isinstance(norm, _BatchNorm)
    assert MODELS.get('GlooSyncBN') is GlooSyncBatchNorm
