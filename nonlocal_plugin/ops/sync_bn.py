"""Synchronised batch norm that also runs on CPU processes (gloo).

Batch norm: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", https://arxiv.org/abs/1502.03167.

torch's ``nn.SyncBatchNorm`` refuses CPU tensors as soon as a process group
exists ("SyncBatchNorm expected input tensor to be on GPU"), DDP refuses any
``nn.SyncBatchNorm`` in a CPU module ("SyncBatchNorm layers only work with
GPU modules"), and mmcv's ``MMSyncBN`` is a CUDA kernel.
:class:`GlooSyncBatchNorm` keeps the statistics synchronised on CPU: each
process sums its features and their squares per channel, one differentiable
``all_reduce`` adds the sums of all processes, and every process normalises
with the statistics of the global batch. Gradients flow back through the
``all_reduce``, so forward and backward equal batch norm over the
concatenated batch.

It is a ``_BatchNorm`` with BN's parameter and buffer names, so checkpoints
move freely between it, BN and SyncBN, and ``norm_eval`` / frozen stages
treat it as batch norm. Outside a multi-process group, or in eval mode, it
is plain BN. The tools build it in place of ``SyncBN`` for CPU jobs with
several processes (:mod:`nonlocal_plugin.apis.dist`); in a config it is
``norm_cfg=dict(type='nonlocal_plugin.GlooSyncBN')``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS


@MODELS.register_module('GlooSyncBN')
class GlooSyncBatchNorm(_BatchNorm):
    """Batch norm whose statistics are shared by every process of a group.

    Args:
        num_features (int): Channels ``C`` of the ``[N, C, ...]`` input.
        eps (float): Added to the variance. Default: 1e-5.
        momentum (float, optional): Of the running statistics; None for a
            cumulative average. Default: 0.1.
        affine (bool): Learn a scale and a shift. Default: True.
        track_running_stats (bool): Keep running statistics. Default: True.
        process_group (ProcessGroup, optional): The processes to share the
            statistics with. Default: the whole world.
        device: Of the parameters and buffers. Default: torch's.
        dtype: Of the parameters and buffers. Default: torch's.
    """

    def __init__(self,
                 num_features: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 process_group: Optional[Any] = None,
                 device=None,
                 dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(
                f'GlooSyncBN expects an [N, C, ...] input, got {x.dim()}D')

    def _group(self):
        return self.process_group or dist.group.WORLD

    def _syncs(self) -> bool:
        """Whether batch statistics are shared with other processes."""
        return (self.training and dist.is_available()
                and dist.is_initialized()
                and dist.get_world_size(self._group()) > 1)

    def forward(self, x: Tensor) -> Tensor:
        if not self._syncs():
            return super().forward(x)  # plain BN
        self._check_input_dim(x)
        channels = x.size(1)
        dims = [0] + list(range(2, x.dim()))
        stats = x.float()
        local = torch.cat([
            stats.sum(dims),  # [C]
            stats.square().sum(dims),  # [C]
            stats.new_tensor([x.numel() // channels]),  # [1]
        ])
        total = dist_nn.all_reduce(local, group=self._group())  # [2C + 1]
        count = total[-1].detach()
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count -
               mean.square()).clamp_min(0)  # biased, as BN normalises
        if self.track_running_stats:
            self._update_running_stats(mean, var, count)
        shape = [1, channels] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out = stats * scale.view(shape) + shift.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor,
                              count: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
