"""Distributed set-up that also works on a CPU-only build of torch.

mmengine's ``pytorch`` and ``slurm`` launchers call ``torch.cuda.set_device``
before they create the process group, which fails on a CPU build of torch
(``module 'torch._C' has no attribute '_cuda_setDevice'``), and its
``MMDistributedDataParallel`` default passes ``device_ids=[LOCAL_RANK]``,
which CPU modules refuse. On a machine without CUDA, :func:`setup_launcher`
therefore

* creates the process group itself, with the ``gloo`` backend, before the
  Runner is built (the Runner then skips its own ``init_dist``);
* gives the model wrapper ``device_ids=None``;
* builds every SyncBN of the config as
  :class:`~nonlocal_plugin.ops.GlooSyncBatchNorm`: torch's
  ``SyncBatchNorm`` refuses CPU tensors whenever a process group exists,
  DDP refuses it in a CPU module, and mmcv's ``MMSyncBN`` is a CUDA kernel,
  whereas this batch norm synchronises its statistics through gloo, so the
  layers stay synchronised. ``sync_bn='torch'`` (the Runner's conversion of
  every BN) is applied to the config's BN layers the same way.

With CUDA, mmengine's own launchers are used unchanged. In one process
(``--launcher none``) mmengine's Runner reverts SyncBN to BN itself
(``mmengine.model.revert_sync_batchnorm``), on CPU and GPU alike.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
from typing import Any, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

from .checks import SetupError

LAUNCHERS = ('none', 'pytorch', 'slurm')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN')
CPU_SYNC_BN = 'nonlocal_plugin.GlooSyncBN'
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT')

# helper functions


def _slurm_env() -> None:
    """Sets torch's rendezvous variables from SLURM's, as mmengine does."""
    try:
        proc_id = int(os.environ['SLURM_PROCID'])
        ntasks = int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
    except KeyError as err:
        raise SetupError(f'--launcher slurm needs the variable {err} that '
                         'srun sets; start the job with srun') from None
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _to_cpu_sync_bn(node: Any, types: Tuple[str, ...]) -> int:
    """Builds every ``norm_cfg`` of ``types`` below ``node`` as
    :class:`~nonlocal_plugin.ops.GlooSyncBatchNorm`; the count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in types:
            node['type'] = CPU_SYNC_BN
            count += 1
        for value in node.values():
            count += _to_cpu_sync_bn(value, types)
    elif isinstance(node, list):
        for value in node:
            count += _to_cpu_sync_bn(value, types)
    return count


# main functions


def init_cpu_process_group(launcher: str, timeout: int | None = None) -> None:
    """Creates the ``gloo`` process group of a CPU job.

    Args:
        launcher (str): ``'pytorch'`` (``torchrun`` set the environment) or
            ``'slurm'``.
        timeout (int, optional): Seconds before a collective fails.
            Default: torch's.

    Raises:
        SetupError: If the launcher's environment is missing.
    """
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_env()
    missing = [key for key in TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise SetupError(
            f'--launcher {launcher} needs the variables {missing}, which '
            'torchrun sets; start the job with tools/dist_train.sh CONFIG '
            'NPROC (or torchrun --nproc_per_node NPROC tools/train.py CONFIG '
            '--launcher pytorch)')
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)


def release_process_group() -> None:
    """Destroys the process group once a run is done.

    Left to the interpreter's exit, gloo's threads sometimes abort it
    (``terminate called without an active exception``, SIGABRT), and
    torchrun then reports a finished run as failed.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def setup_launcher(cfg: Config, launcher: str) -> None:
    """Prepares ``cfg`` (and, on CPU, the process group) for ``launcher``.

    Args:
        cfg (Config): The run's config; ``launcher``, ``model_wrapper_cfg``
            and (on CPU) the norm layers are updated in place.
        launcher (str): ``'none'``, ``'pytorch'`` or ``'slurm'``.

    Raises:
        SetupError: For an unknown launcher or a missing environment.
    """
    if launcher not in LAUNCHERS:
        raise SetupError(f'--launcher must be one of {LAUNCHERS}, got '
                         f'{launcher!r}')
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
    init_cpu_process_group(launcher, timeout=dist_cfg.get('timeout'))
    if 'env_cfg' in cfg and 'dist_cfg' in cfg.env_cfg:
        cfg.env_cfg.dist_cfg.backend = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    types = SYNC_BN_TYPES
    if cfg.get('sync_bn'):  # the Runner would convert every BN to torch's
        types += ('BN', 'BN2d')
        cfg.sync_bn = None
    converted = _to_cpu_sync_bn(cfg.get('model'), types)
    if converted and dist.get_rank() == 0:
        print_log(
            f'CPU run with {dist.get_world_size()} gloo processes: {converted}'
            f' SyncBN norm configs are built as {CPU_SYNC_BN}, which '
            'synchronises batch statistics through gloo (torch\'s '
            'SyncBatchNorm only runs on GPUs)',
            logger='current', level=logging.INFO)
