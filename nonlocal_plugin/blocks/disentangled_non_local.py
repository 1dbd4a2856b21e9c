"""Disentangled non-local block (Yin et al., ECCV 2020).

Paper: "Disentangled Non-Local Neural Networks",
https://arxiv.org/abs/2006.06668.
Consulted: mmseg's ``DisentangledNonLocal2d`` in
``mmseg/models/decode_heads/dnl_head.py``, whose state-dict keys this block
keeps (``g``, ``theta``, ``phi``, ``conv_out``, ``conv_mask``).

DNL splits the non-local term in two: a *whitened pairwise* term, the
attention of queries and keys each centred by their mean over positions
(with a temperature on the logits), and a *unary* term, a softmax over key
positions of a 1x1-conv mask that pools the value into one global vector.
Both go through one output conv. Unlike mmseg's block, this one works with
``sub_sample=True`` (the unary mask is pooled to the key positions) and
never writes into its input.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..ops import softmax_pool
from ..registry import MODELS
from ._dims import DIMS, subsample_pool
from ._validate import check_bool, check_positive_number
from .non_local import NonLocalNd


@MODELS.register_module()
class DisentangledNonLocal(NonLocalNd):
    """The DNL block: whitened pairwise term plus unary term.

    Args:
        in_channels (int): Channels of the input.
        dim (int): Spatial dims of the input: 1, 2 or 3. Default: 2.
        reduction (int): Channel reduction of theta, phi and g. Default: 2.
        use_scale (bool): Divide the ``embedded_gaussian`` logits by
            ``sqrt(in_channels // reduction)``. Default: True.
        mode (str): Pairwise function, as in :class:`NonLocalNd`.
            Default: ``'embedded_gaussian'``.
        temperature (float): Divides the ``embedded_gaussian`` logits, as in
            the paper and mmseg (the other modes ignore it). Default: 0.05.
        sub_sample (bool): Max-pool keys, values and the unary mask 2x in
            each spatial dim. Default: False.
        use_pairwise (bool): Keep the whitened pairwise term. Default: True.
        use_unary (bool): Keep the unary term. Default: True.
        conv_cfg (dict, optional): Config of the 1x1 convs. Default: None.
        norm_cfg (dict, optional): Norm after ``conv_out``. Default: None.
        std (float): Std of the normal init of theta, phi and g.
            Default: 0.01.
        zeros_init (bool): Start ``conv_out`` (or its norm) at zero.
            Default: True.
        attn_impl (str): ``'auto'``, ``'fused'`` or ``'reference'``, as in
            :class:`~nonlocal_plugin.NonLocal2D`. Default: ``'auto'``.
    """

    _abbr_ = 'dnl_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 dim: int = 2,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 temperature: float = 0.05,
                 sub_sample: bool = False,
                 use_pairwise: bool = True,
                 use_unary: bool = True,
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 std: float = 0.01,
                 zeros_init: bool = True,
                 attn_impl: str = 'auto') -> None:
        self.temperature = check_positive_number('temperature', temperature)
        self.use_pairwise = check_bool('use_pairwise', use_pairwise)
        self.use_unary = check_bool('use_unary', use_unary)
        if not (use_pairwise or use_unary):
            raise ValueError('DisentangledNonLocal needs use_pairwise=True or '
                             'use_unary=True (or both); got neither')
        super().__init__(in_channels, dim=dim, reduction=reduction,
                         use_scale=use_scale, mode=mode,
                         sub_sample=sub_sample, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, std=std, zeros_init=zeros_init,
                         attn_impl=attn_impl)
        if not use_pairwise:  # the unary-only ablation has no theta/phi
            for unused in ('theta', 'phi', 'concat_project'):
                if hasattr(self, unused):
                    delattr(self, unused)
        if use_unary:
            conv = getattr(nn, DIMS[dim].conv)
            self.conv_mask = conv(in_channels, 1, kernel_size=1)
            self.mask_pool = (subsample_pool(dim)
                              if sub_sample else nn.Identity())

    def embed(self, x: Tensor):
        if self.use_pairwise:
            return super().embed(x)
        return None, None, self.project(x, ('g', ))[0]  # [N, M, C']

    def logit_scale(self) -> float:
        scale = super().logit_scale()
        if self.mode == 'embedded_gaussian':
            scale /= self.temperature
        return scale

    def aggregate(self, x: Tensor, query: Tensor | None,
                  key: Tensor | None, value: Tensor) -> Tensor:
        context = None
        if self.use_pairwise:
            # Whitening: centre queries and keys over their positions.
            query = query - query.mean(dim=1, keepdim=True)  # [N, HW, C]
            key = key - key.mean(dim=1, keepdim=True)  # [N, M, C]
            context = super().aggregate(x, query, key, value)  # [N, HW, C']
        if self.use_unary:
            logits = self.mask_pool(self.conv_mask(x)).flatten(1)  # [N, M]
            unary = softmax_pool(logits, value).unsqueeze(1)  # [N, 1, C']
            if context is None:
                # From the flattened shape, which a trace keeps symbolic.
                positions = x.flatten(2).shape[2]
                context = unary.expand(-1, positions, -1)  # [N, HW, C']
            else:
                context = context + unary  # [N, HW, C']
        return context

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, temperature={self.temperature}, '
                f'use_pairwise={self.use_pairwise}, '
                f'use_unary={self.use_unary}')
