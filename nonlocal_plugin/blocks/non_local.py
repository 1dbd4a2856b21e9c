"""Non-local blocks (Wang et al., CVPR 2018).

Paper: "Non-local Neural Networks", https://arxiv.org/abs/1711.07971.
Consulted: mmcv's ``mmcv/cnn/bricks/non_local.py``, whose module names and
state-dict layout these blocks keep, so that its weights load unchanged.

One class, :class:`NonLocalNd`, covers 1-D, 2-D and 3-D inputs through the
dim table in :mod:`._dims`; ``NonLocal1D``, ``NonLocal2D`` and ``NonLocal3D``
only fix ``dim``. The pairwise functions live in :mod:`nonlocal_plugin.ops`,
where each has a fused path that never builds the ``N x N`` map
(``attn_impl='fused'``), the materialising reference path
(``'reference'``) and a per-call choice between them (``'auto'``, the
default: see :mod:`nonlocal_plugin.ops.attention`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from mmcv.cnn import ConvModule
from mmengine.model import constant_init, normal_init
from torch import Tensor, nn

from ..ops import ATTN_IMPLS, no_autocast, pairwise_attention
from ..registry import MODELS
from ._dims import DIMS, subsample_pool
from ._pointwise import (
    map_to_rows,
    plain_pointwise,
    project_rows_out,
    rows_to_map,
    stacked_projection,
)
from ._validate import (
    check_bool,
    check_choice,
    check_input,
    check_positive_int,
    check_positive_number,
)

MODES = ('gaussian', 'embedded_gaussian', 'dot_product', 'concatenation')


def _conv(module: Optional[nn.Module]) -> Optional[nn.Module]:
    """The ConvModule inside a projection that may be followed by a pool."""
    return module[0] if isinstance(module, nn.Sequential) else module


class NonLocalNd(nn.Module):
    """A non-local block for inputs with 1, 2 or 3 spatial dims.

    ``y_i = sum_j f(x_i, x_j) g(x_j) / C(x)`` aggregates a value embedding
    over every position; the block returns ``x + W_z y``. ``W_z``
    (``conv_out``, or its norm) starts at zero, so the block starts as the
    identity and a pretrained backbone is unchanged when it is inserted.

    Args:
        in_channels (int): Channels of the input.
        dim (int): Spatial dims of the input: 1, 2 or 3. Default: 2.
        reduction (int): ``in_channels // reduction`` channels are used for
            theta, phi and g. Default: 2.
        use_scale (bool): Divide the ``embedded_gaussian`` logits by
            ``sqrt(in_channels // reduction)``. Default: True.
        mode (str): The pairwise function: ``'gaussian'``,
            ``'embedded_gaussian'``, ``'dot_product'`` or
            ``'concatenation'``. Default: ``'embedded_gaussian'``.
        sub_sample (bool): Max-pool keys and values 2x in each spatial dim
            (never in time), which cuts the pairwise cost by 4. Default: False.
        conv_cfg (dict, optional): Config of the 1x1 convs. Default: the
            plain conv of ``dim``.
        norm_cfg (dict, optional): Norm after ``conv_out``. When given, the
            norm instead of the conv starts at zero. Default: None.
        std (float): Std of the normal init of theta, phi and g.
            Default: 0.01.
        zeros_init (bool): Start ``conv_out`` (or its norm) at zero, making
            the block the identity at init. Default: True.
        attn_impl (str): ``'auto'`` (per call, the path measured fastest
            for the mode, device and size), ``'fused'`` (kernels that never
            build the ``N x M`` map) or ``'reference'`` (the materialising
            textbook path). Default: ``'auto'``.
    """

    _abbr_ = 'nonlocal_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 dim: int = 2,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 sub_sample: bool = False,
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 std: float = 0.01,
                 zeros_init: bool = True,
                 attn_impl: str = 'auto') -> None:
        super().__init__()
        name = type(self).__name__
        in_channels = check_positive_int('in_channels', in_channels)
        reduction = check_positive_int('reduction', reduction)
        if isinstance(dim, (bool, float)) or dim not in DIMS:
            raise ValueError(f'dim must be one of {tuple(DIMS)}, got {dim!r}')
        if in_channels // reduction == 0:
            raise ValueError(
                f'{name}: reduction={reduction} leaves 0 channels from '
                f'in_channels={in_channels}; use reduction <= {in_channels}')
        for opt, value in (('conv_cfg', conv_cfg), ('norm_cfg', norm_cfg)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f'{opt} must be a dict or None, got {value!r}')
        self.in_channels = in_channels
        self.dim = int(dim)
        self.reduction = reduction
        self.inter_channels = in_channels // reduction
        self.use_scale = check_bool('use_scale', use_scale)
        self.mode = check_choice('mode', mode, MODES)
        self.sub_sample = check_bool('sub_sample', sub_sample)
        self.attn_impl = check_choice('attn_impl', attn_impl, ATTN_IMPLS)
        self._layout = DIMS[dim].layout
        conv_cfg = conv_cfg if conv_cfg is not None else dict(
            type=DIMS[dim].conv)

        def projection(out_channels: int) -> ConvModule:
            return ConvModule(in_channels, out_channels, kernel_size=1,
                              conv_cfg=conv_cfg, act_cfg=None)

        self.g = projection(self.inter_channels)
        self.conv_out = ConvModule(self.inter_channels, in_channels,
                                   kernel_size=1, conv_cfg=conv_cfg,
                                   norm_cfg=norm_cfg, act_cfg=None)
        if mode != 'gaussian':
            self.theta = projection(self.inter_channels)
            self.phi = projection(self.inter_channels)
        if mode == 'concatenation':
            # Only its weight is used, by the chunked kernel; it stays a
            # ConvModule so that mmcv's `concat_project.conv.weight` loads.
            self.concat_project = ConvModule(
                self.inter_channels * 2, 1, kernel_size=1, bias=False,
                act_cfg=dict(type='ReLU'))
        if sub_sample:
            self.g = nn.Sequential(self.g, subsample_pool(dim))
            self.phi = (subsample_pool(dim) if mode == 'gaussian' else
                        nn.Sequential(self.phi, subsample_pool(dim)))
        self.std = check_positive_number('std', std)
        self.zeros_init = check_bool('zeros_init', zeros_init)
        self.init_weights()

    def init_weights(self,
                     std: Optional[float] = None,
                     zeros_init: Optional[bool] = None) -> None:
        """Normal init for the embeddings; zero ``conv_out`` for identity.

        mmengine calls this again, with no arguments, after a backbone's own
        init (which would otherwise give ``conv_out`` a Kaiming init); the
        constructor's ``std`` and ``zeros_init`` then apply.

        Args:
            std (float, optional): Overrides the constructor's ``std``.
            zeros_init (bool, optional): Overrides the constructor's
                ``zeros_init``.
        """
        std = self.std if std is None else std
        zeros_init = self.zeros_init if zeros_init is None else zeros_init
        for proj in ('g', 'theta', 'phi'):
            conv = _conv(getattr(self, proj, None))
            if isinstance(conv, ConvModule):  # gaussian has no phi conv
                normal_init(conv.conv, std=std)
        target = (self.conv_out.conv
                  if self.conv_out.norm_cfg is None else self.conv_out.norm)
        if zeros_init:
            constant_init(target, 0)
        else:
            normal_init(target, std=std)

    def logit_scale(self) -> float:
        """The factor on the softmax logits."""
        if self.mode == 'embedded_gaussian' and self.use_scale:
            return self.inter_channels**-0.5
        return 1.0

    def project(self, x: Tensor, names: Sequence[str]) -> List[Tensor]:
        """The named projections of ``x`` (``'theta'``, ``'phi'``, ``'g'``),
        each as position rows ``[N, positions, C']``.

        Plain 1x1 convs run as one stacked GEMM (:mod:`._pointwise`); the
        sub-sampling pool of ``phi`` and ``g`` follows on the map.
        """
        modules = [getattr(self, name) for name in names]
        convs = [plain_pointwise(_conv(module)) for module in modules]
        if any(conv is None for conv in convs):
            return [map_to_rows(module(x)) for module in modules]
        rows = stacked_projection(x, convs)  # each [N, HW, C']
        return [
            map_to_rows(module[1](rows_to_map(r, x.shape[2:])))
            if isinstance(module, nn.Sequential) else r
            for module, r in zip(modules, rows)
        ]

    def embed(self, x: Tensor):
        """Query, key and value rows of ``x``, each ``[N, positions, C]``."""
        if self.mode == 'gaussian':
            value, = self.project(x, ('g', ))  # [N, M, C']
            rows = map_to_rows(x)  # [N, HW, C]
            # Without sub-sampling the queries are the keys, one object, so
            # that the kernels can use the symmetry of x x^T.
            keys = map_to_rows(self.phi(x)) if self.sub_sample else rows
            return rows, keys, value
        return tuple(self.project(x, ('theta', 'phi', 'g')))

    def aggregate(self, x: Tensor, query: Tensor, key: Tensor,
                  value: Tensor) -> Tensor:
        """The context of each position, ``[N, HW, C']``."""
        concat_weight = (self.concat_project.conv.weight.flatten()
                         if self.mode == 'concatenation' else None)
        return pairwise_attention(query, key, value, mode=self.mode,
                                  scale=self.logit_scale(),
                                  concat_weight=concat_weight,
                                  impl=self.attn_impl)

    def forward(self, x: Tensor) -> Tensor:
        check_input(type(self).__name__, x, self.in_channels, self._layout)
        query, key, value = self.embed(x)
        context = self.aggregate(x, query, key, value)  # [N, HW, C']
        return x + self.project_out(context, x.shape[2:])

    def project_out(self, context: Tensor, spatial: Sequence[int]) -> Tensor:
        """``conv_out`` of the context rows, at the precision of its weights.

        The kernels return fp32 contexts; a dot-product or concatenation
        context can exceed fp16's range, so under autocast this 1x1 conv
        (cheap next to the attention) stays in fp32.

        Args:
            context (Tensor): ``[N, HW, C']`` rows.
            spatial (Sequence[int]): The input's spatial shape.

        Returns:
            Tensor: ``[N, C, *spatial]``.
        """
        with no_autocast(context):
            return project_rows_out(
                context.to(self.conv_out.conv.weight.dtype), self.conv_out,
                spatial)

    def __prepare_scriptable__(self) -> nn.Module:
        """Refuses ``torch.jit.script`` with a message saying what works.

        The projections are mmcv ``ConvModule`` s (for mmcv's state-dict
        keys), which TorchScript cannot compile, and the kernels are picked
        in Python. ``torch.jit.trace``, ``torch.onnx.export`` and
        ``torch.export`` capture the block.
        """
        raise RuntimeError(
            f'{type(self).__name__} does not support torch.jit.script: its '
            "projections are mmcv's ConvModule, which TorchScript cannot "
            'compile, and it picks its attention kernel in Python. Use '
            'torch.jit.trace, torch.onnx.export (either exporter) or '
            'torch.export, which record a graph that holds for every input '
            'size')

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, dim={self.dim}, '
                f'sub_sample={self.sub_sample}, attn_impl={self.attn_impl!r}')


@MODELS.register_module()
class NonLocal1D(NonLocalNd):
    """:class:`NonLocalNd` on ``[N, C, L]`` sequences; same options.

    Takes mmcv's ``NonLocal1d`` positional order, ``(in_channels,
    sub_sample, conv_cfg)``; every other option is keyword-only.
    """

    def __init__(self,
                 in_channels: int,
                 sub_sample: bool = False,
                 conv_cfg: Optional[dict] = None,
                 **options) -> None:
        super().__init__(in_channels, dim=1, sub_sample=sub_sample,
                         conv_cfg=conv_cfg, **options)


@MODELS.register_module()
class NonLocal2D(NonLocalNd):
    """:class:`NonLocalNd` on ``[N, C, H, W]`` maps; same options.

    Drop-in for mmcv's ``NonLocal2d``: the same options and state-dict
    keys, and its positional order, ``(in_channels, sub_sample, conv_cfg)``
    (so ``NonLocal2D(256, True)`` sub-samples, as in mmcv). Every other
    option is keyword-only.
    """

    def __init__(self,
                 in_channels: int,
                 sub_sample: bool = False,
                 conv_cfg: Optional[dict] = None,
                 **options) -> None:
        super().__init__(in_channels, dim=2, sub_sample=sub_sample,
                         conv_cfg=conv_cfg, **options)


@MODELS.register_module()
class NonLocal3D(NonLocalNd):
    """:class:`NonLocalNd` on ``[N, C, T, H, W]`` clips; same options.

    Sub-sampling pools space only, as in the paper's video models. Takes
    mmcv's ``NonLocal3d`` positional order, ``(in_channels, sub_sample,
    conv_cfg)``; every other option is keyword-only.
    """

    def __init__(self,
                 in_channels: int,
                 sub_sample: bool = False,
                 conv_cfg: Optional[dict] = None,
                 **options) -> None:
        super().__init__(in_channels, dim=3, sub_sample=sub_sample,
                         conv_cfg=conv_cfg, **options)
