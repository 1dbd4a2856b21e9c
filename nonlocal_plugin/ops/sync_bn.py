"""Synchronised batch norm that also runs on CPU processes (gloo).

Batch norm: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", https://arxiv.org/abs/1502.03167.

torch's ``nn.SyncBatchNorm`` refuses CPU tensors as soon as a process group
exists ("SyncBatchNorm expected input tensor to be on GPU"), and mmcv's
``MMSyncBN`` is a CUDA kernel. :class:`GlooSyncBatchNorm` keeps the
statistics synchronised on CPU: each process sums its features and their
squares per channel, one differentiable ``all_reduce`` adds the sums of all
processes, and every process normalises with the statistics of the global
batch. Gradients flow back through the ``all_reduce``, so forward and
backward equal batch norm over the concatenated batch.

It subclasses ``nn.SyncBatchNorm``: the parameter and buffer names are the
same, mmengine reverts it to BN in a single process like any SyncBN, and on
devices torch's own kernel supports it simply defers to it. The tools build
it in place of ``SyncBN`` for CPU jobs with several processes
(:mod:`nonlocal_plugin.apis.dist`); in a config it is
``norm_cfg=dict(type='nonlocal_plugin.GlooSyncBN')``.
"""
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS


@MODELS.register_module('GlooSyncBN')
class GlooSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` whose synchronisation also works on CPU.

    The constructor is ``nn.SyncBatchNorm``'s.
    """

    def _syncs(self) -> bool:
        """Whether batch statistics are shared with other processes."""
        if not (self.training and dist.is_available()
                and dist.is_initialized()):
            return False
        group = self.process_group or dist.group.WORLD
        return dist.get_world_size(group) > 1

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != 'cpu':
            return super().forward(x)  # torch's kernels
        if not self._syncs():
            # Plain BN: torch's SyncBatchNorm would refuse the CPU tensor
            # even in a group of one process.
            return _BatchNorm.forward(self, x)
        self._check_input_dim(x)
        self._check_non_zero_input_channels(x)
        channels = x.size(1)
        dims = [0] + list(range(2, x.dim()))
        stats = x.float()
        local = torch.cat([
            stats.sum(dims),  # [C]
            stats.square().sum(dims),  # [C]
            stats.new_tensor([x.numel() // channels]),  # [1]
        ])
        total = dist_nn.all_reduce(
            local, group=self.process_group or dist.group.WORLD)
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
