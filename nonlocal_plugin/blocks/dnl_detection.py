"""The disentangled non-local block of the DNL detection code.

Paper: "Disentangled Non-Local Neural Networks" (Yin et al., ECCV 2020),
https://arxiv.org/abs/2006.06668.
Consulted: the authors' detection code, github.com/Howal/DNL-Object-Detection,
``mmdet/ops/nl_gc_block.py`` (class ``NonLocal2dGc``), as configured by
``configs/dnlnet/mask_rcnn_r50_r4_nlgcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py``
(``ratio=1/4, downsample=False, whiten_type=['channel'], temp=0.05,
with_gc=True, use_out=False, out_bn=False``), and the ResNet of that code,
``mmdet/models/backbones/resnet.py``, for where the block sits. Module and
parameter names follow the official file (``conv_query``, ``conv_key``,
``conv_value``, ``conv_mask``, ``gamma``, ``query_bn``/``key_bn``, ...), so
its block weights load.

This is not the block of :class:`~nonlocal_plugin.DisentangledNonLocal`
(mmseg's, used for segmentation). Here there is no output conv: the value
conv maps ``C -> C`` without a bias, and

    y_i = x_i + gamma * sum_j softmax_j(q~_i . k~_j / (sqrt(C') T)) v_j
              + sum_j softmax_j(m_j) v_j

with ``q~``, ``k~`` the whitened queries and keys (width ``C' = C / 4``),
``T`` the temperature (0.05), ``gamma`` a learnable scalar, zero at init,
that gates the pairwise term only, and ``m_j = w_m . x_j + b_m`` GCNet's
mask conv; the unary term shares the value and is added ungated.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops import ATTN_IMPLS, softmax_attention, softmax_pool
from ..registry import MODELS
from ._pointwise import rows_to_map, stacked_projection
from ._validate import (
    check_bool,
    check_choice,
    check_input,
    check_positive_int,
    check_positive_number,
)

#: ``whiten_type`` of the official code, one at a time.
WHITENINGS = ('none', 'channel', 'spatial', 'bn', 'bn_affine')
UNARY_TYPES = ('conv', 'mean')


@MODELS.register_module()
class DisentangledNonLocalDet2D(nn.Module):
    """DNL block of the official detection code (``NonLocal2dGc``).

    Meant to sit where the official ResNet puts it: inside a bottleneck,
    after the residual add and before the final ReLU (in the detection
    config, the second-last block of res4). Placing it is the backbone's
    job, not this module's.

    Identity at init: only with ``use_unary=False`` or ``zeros_init=True``.
    The official init (followed by default) draws every conv from
    ``N(0, std^2)`` with zero biases and sets ``gamma = 0``: that silences
    the pairwise term, but nothing zeroes the unary term, which starts as
    about ``W_v mean_j(x_j)`` (the mask logits are near zero, so the
    softmax is near uniform), a small per-image, per-channel offset.

    Args:
        in_channels (int): Channels of the ``[N, C, H, W]`` input.
        reduction (int): Queries and keys have ``in_channels // reduction``
            channels (the official ``ratio=1/4``). Default: 4.
        temperature (float): Divides the pairwise logits, after the
            ``1 / sqrt(C')`` scale (official ``temp``). Default: 0.05.
        learn_temperature (bool): Learn the temperature, as
            ``T = exp(log_temperature)`` starting at ``temperature`` (not in
            the official code). Default: False.
        whitening (str): What is done to queries and keys before their
            product (official ``whiten_type``, one entry): ``'none'``;
            ``'channel'``, subtract their means over positions (DNL's
            whitening); ``'spatial'``, subtract their means over channels;
            ``'bn'``, a ``BatchNorm1d`` without affine parameters (batch
            statistics over images and positions in training, running
            statistics in eval); ``'bn_affine'``, the same with affine
            parameters. Default: ``'channel'``.
        use_pairwise (bool): Keep the gated pairwise term (False: the
            unary-only row; no ``gamma``). Default: True.
        use_unary (bool): Keep the unary term (official ``with_gc``; False:
            the pairwise-only row). Default: True.
        unary_type (str): The unary logits: ``'conv'``, GCNet's 1x1 mask
            conv ``m_j`` (official); ``'mean'``, ``mean_i(q_i) . k_j``, the
            unary part of the non-local block's logits ``q_i . k_j`` in the
            paper's decomposition (unwhitened query and key, no scale and
            no temperature; not in the official code). Used only with
            ``use_unary=True``. Default: ``'conv'``.
        sub_sample (bool): Max-pool the input of keys, values and the mask
            2x2 (official ``downsample``; the config turns it off).
            Default: False.
        std (float): Std of the normal init of every conv. Default: 0.01.
        zeros_init (bool): Start ``conv_value`` at zero, which makes the
            block the identity at init (not in the official code; ``gamma``
            then gets no gradient until the value has moved). Default: False.
        attn_impl (str): ``'auto'``, ``'fused'`` or ``'reference'``, the
            pairwise kernel, as in :class:`~nonlocal_plugin.NonLocal2D`.
            Default: ``'auto'``.
    """

    _abbr_ = 'dnl_det_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 reduction: int = 4,
                 temperature: float = 0.05,
                 learn_temperature: bool = False,
                 whitening: str = 'channel',
                 use_pairwise: bool = True,
                 use_unary: bool = True,
                 unary_type: str = 'conv',
                 sub_sample: bool = False,
                 std: float = 0.01,
                 zeros_init: bool = False,
                 attn_impl: str = 'auto') -> None:
        super().__init__()
        name = type(self).__name__
        in_channels = check_positive_int('in_channels', in_channels)
        reduction = check_positive_int('reduction', reduction)
        if in_channels // reduction == 0:
            raise ValueError(
                f'{name}: reduction={reduction} leaves 0 channels from '
                f'in_channels={in_channels}; use reduction <= {in_channels}')
        self.in_channels = in_channels
        self.reduction = reduction
        self.planes = in_channels // reduction
        self.temperature = check_positive_number('temperature', temperature)
        self.learn_temperature = check_bool('learn_temperature',
                                            learn_temperature)
        self.whitening = check_choice('whitening', whitening, WHITENINGS)
        self.use_pairwise = check_bool('use_pairwise', use_pairwise)
        self.use_unary = check_bool('use_unary', use_unary)
        if not (self.use_pairwise or self.use_unary):
            raise ValueError(f'{name} needs use_pairwise=True or '
                             'use_unary=True (or both); got neither')
        self.unary_type = check_choice('unary_type', unary_type, UNARY_TYPES)
        self.sub_sample = check_bool('sub_sample', sub_sample)
        self.std = check_positive_number('std', std)
        self.zeros_init = check_bool('zeros_init', zeros_init)
        self.attn_impl = check_choice('attn_impl', attn_impl, ATTN_IMPLS)

        mean_unary = self.use_unary and self.unary_type == 'mean'
        planes = self.planes
        has_qk = self.use_pairwise or mean_unary
        self.conv_query = (nn.Conv2d(in_channels, planes, kernel_size=1)
                           if has_qk else None)
        self.conv_key = (nn.Conv2d(in_channels, planes, kernel_size=1)
                         if has_qk else None)
        self.conv_value = nn.Conv2d(in_channels, in_channels, kernel_size=1,
                                    bias=False)
        self.conv_mask = (nn.Conv2d(in_channels, 1, kernel_size=1)
                          if self.use_unary and not mean_unary else None)
        if self.use_pairwise and self.whitening in ('bn', 'bn_affine'):
            affine = self.whitening == 'bn_affine'
            suffix = '_affine' if affine else ''
            for role in ('key', 'query'):
                self.add_module(f'{role}_bn{suffix}',
                                nn.BatchNorm1d(planes, affine=affine))
        self.gamma = (nn.Parameter(torch.zeros(1))
                      if self.use_pairwise else None)
        self.log_temperature = (nn.Parameter(torch.zeros(()))
                                if self.use_pairwise
                                and self.learn_temperature else None)
        self.downsample = (nn.MaxPool2d(kernel_size=(2, 2), stride=(2, 2))
                           if self.sub_sample else None)
        self.init_weights()

    def init_weights(self) -> None:
        """The official init: convs ``N(0, std^2)``, zero biases and gamma.

        mmengine calls this again after a backbone's own (Kaiming) init.
        """
        for module in (self.conv_query, self.conv_key, self.conv_value,
                       self.conv_mask):
            if module is not None:
                nn.init.normal_(module.weight, 0, self.std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.zeros_init:
            nn.init.zeros_(self.conv_value.weight)
        with torch.no_grad():
            if self.gamma is not None:
                self.gamma.zero_()
            if self.log_temperature is not None:
                self.log_temperature.fill_(math.log(self.temperature))

    def embed(self, x: Tensor, source: Tensor):
        """Query rows of ``x``; key and value rows of ``source``.

        Returns:
            tuple: ``query [N, HW, C']``, ``key [N, M, C']`` (None without
            query and key convs) and ``value [N, M, C]``.
        """
        if self.conv_query is None:
            value, = stacked_projection(source, [self.conv_value])
            return None, None, value  # [N, M, C]
        if source is x:  # one GEMM for the three 1x1 convs
            query, key, value = stacked_projection(
                x, [self.conv_query, self.conv_key, self.conv_value])
            return query, key, value
        query, = stacked_projection(x, [self.conv_query])  # [N, HW, C']
        key, value = stacked_projection(source,
                                        [self.conv_key, self.conv_value])
        return query, key, value  # [N, HW, C'], [N, M, C'], [N, M, C]

    def _batch_norm(self, role: str, rows: Tensor) -> Tensor:
        """A BatchNorm1d over ``[N, L, C']`` rows: per channel, over N x L."""
        suffix = '_affine' if self.whitening == 'bn_affine' else ''
        norm = getattr(self, f'{role}_bn{suffix}')
        flat = rows.reshape(-1, rows.shape[-1])  # [N L, C']
        return norm(flat).reshape(rows.shape)  # [N, L, C']

    def whiten(self, query: Tensor, key: Tensor):
        """Queries ``[N, HW, C']`` and keys ``[N, M, C']``, whitened."""
        if self.whitening == 'channel':  # the means over positions
            query = query - query.mean(dim=1, keepdim=True)
            key = key - key.mean(dim=1, keepdim=True)
        elif self.whitening == 'spatial':  # the means over channels
            query = query - query.mean(dim=2, keepdim=True)
            key = key - key.mean(dim=2, keepdim=True)
        elif self.whitening != 'none':
            query = self._batch_norm('query', query)
            key = self._batch_norm('key', key)
        return query, key

    def current_temperature(self) -> Tensor:
        """The temperature in use, learned or not (a 0-d tensor)."""
        if self.log_temperature is not None:
            return self.log_temperature.exp()
        return torch.tensor(self.temperature)

    def pairwise(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """The whitened pairwise term before the gate, ``[N, HW, C]``."""
        query, key = self.whiten(query, key)
        scale = self.planes**-0.5
        if self.log_temperature is None:
            return softmax_attention(query, key, value,
                                     scale=scale / self.temperature,
                                     impl=self.attn_impl)
        # A learned temperature is a tensor: it goes on the queries.
        factor = torch.exp(-self.log_temperature) * scale
        return softmax_attention(query * factor, key, value,
                                 impl=self.attn_impl)

    def unary(self, source: Tensor, query: Tensor | None, key: Tensor | None,
              value: Tensor) -> Tensor:
        """The unary term, one vector per image, ``[N, C]``."""
        if self.conv_mask is not None:
            logits = self.conv_mask(source).flatten(1)  # [N, M]
        else:  # mean_i(q_i) . k_j
            mean_query = query.mean(dim=1, keepdim=True)  # [N, 1, C']
            logits = torch.matmul(mean_query,
                                  key.transpose(1, 2)).flatten(1)  # [N, M]
        return softmax_pool(logits, value)  # [N, C]

    def forward(self, x: Tensor) -> Tensor:
        check_input(type(self).__name__, x, self.in_channels, 'N, C, H, W')
        # The input of keys, values and the mask, [N, C, H', W'].
        source = x if self.downsample is None else self.downsample(x)
        query, key, value = self.embed(x, source)
        out = x
        if self.use_pairwise:
            context = self.gamma * self.pairwise(query, key, value)
            out = out + rows_to_map(context.to(x.dtype),
                                    x.shape[2:])  # [N, C, H, W]
        if self.use_unary:
            unary = self.unary(source, query, key, value)  # [N, C]
            out = out + unary.to(x.dtype)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, planes={self.planes}, '
                f'temperature={self.temperature}, '
                f'learn_temperature={self.learn_temperature}, '
                f'whitening={self.whitening!r}, '
                f'use_pairwise={self.use_pairwise}, '
                f'use_unary={self.use_unary}, '
                f'unary_type={self.unary_type!r}, '
                f'sub_sample={self.sub_sample}, attn_impl={self.attn_impl!r}')
