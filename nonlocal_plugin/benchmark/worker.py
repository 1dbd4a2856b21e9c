"""What runs inside each isolated worker process: one measurement."""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Dict

from .memory import PeakMemory, proc_status_kb
from .settings import (
    BACKWARD_FLOP_FACTOR,
    DNL_TEMPERATURE,
    MASK_RCNN_CONFIG,
    MODEL_BLOCK,
    NL_PLACEMENT,
    Shape,
)


def peer_pairwise_bytes(block: str,
                        mode: str,
                        shape: Shape,
                        *,
                        batch: int = 1,
                        sub_sample: bool = False) -> int:
    """The pairwise tensors a peer's forward + backward holds at its peak.

    A lower bound on the peer's extra memory: only the ``[B, N, M]`` maps
    (and, for mmcv's ``concatenation``, the ``[B, 2C', N, M]`` tiles of its
    inputs) are counted, in fp32.

    * softmax modes (and DNL): the softmax output saved for backward, the
      gradient of the attention and that of the logits: 3 maps;
    * ``dot_product``: the saved map and its gradient: 2 maps;
    * ``concatenation``: theta and phi repeated to ``[B, C', N, M]`` each and
      concatenated (``4 C'`` maps), the projected map and its gradient.

    Args:
        block (str): ``'nl'`` or ``'dnl'``.
        mode (str): The pairwise mode.
        shape (tuple[int]): ``(C, H, W)``.
        batch (int): Batch size. Default: 1.
        sub_sample (bool): Keys max-pooled 2x. Default: False.

    Returns:
        int: Bytes.
    """
    channels, height, width = shape
    queries = height * width
    keys = (height // 2) * (width // 2) if sub_sample else queries
    maps = batch * queries * keys
    if block == 'dnl' or mode in ('gaussian', 'embedded_gaussian'):
        per_pair = 3
    elif mode == 'dot_product':
        per_pair = 2
    else:
        per_pair = 4 * (channels // 2) + 2
    return 4 * maps * per_pair


def attention_flops(queries: int, keys: int, head_dim: int,
                    backward: bool) -> float:
    """FLOPs of softmax attention, by the convention in the module doc."""
    forward = 4.0 * queries * keys * head_dim
    return forward * (1 + BACKWARD_FLOP_FACTOR) if backward else forward


def make_result(status: str, note: str = '', **values) -> Dict[str, Any]:
    return dict(status=status, note=note, **values)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'[:300]


# worker side: runs in a fresh process


def _limit_address_space(cap_bytes: int) -> None:
    """Caps the address space at its current size plus ``cap_bytes``."""
    used = proc_status_kb('VmSize') * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = used + cap_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _synchronize(device: str) -> None:
    if device == 'cuda':
        import torch
        torch.cuda.synchronize()


def forward_autocast(spec: Dict[str, Any]):
    """The forward's autocast: ``spec['amp']`` (``'fp16'``/``'bf16'``) on
    ``spec['device']``, or a disabled one for fp32 runs."""
    import torch
    amp = spec.get('amp')
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    return torch.autocast(spec['device'], dtype=dtype, enabled=bool(amp))


def time_and_memory(step: Callable[[], None], repeats: int,
                    device: str) -> Dict[str, Any]:
    """One warm-up ``step``, then the median time and largest peak.

    Args:
        step (callable): One forward + backward; takes no arguments.
        repeats (int): Timed steps after the warm-up.
        device (str): ``'cpu'`` or ``'cuda'``.

    Returns:
        dict: ``time_s`` (median), ``times_s`` and ``extra_bytes``.
    """
    step()
    _synchronize(device)
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            step()
            _synchronize(device)
            times.append(time.perf_counter() - start)
        peaks.append(memory.extra)
    return make_result('ok', time_s=statistics.median(times), times_s=times,
                   extra_bytes=max(peaks))


def build_block(block: str, impl: str, mode: str, channels: int,
                sub_sample: bool):
    """Our block (``impl='ours'``) or its peer (``impl='peer'``)."""
    if block == 'nl' and impl == 'ours':
        from nonlocal_plugin import NonLocal2D
        return NonLocal2D(channels, mode=mode, sub_sample=sub_sample,
                          attn_impl='auto')
    if block == 'nl':
        from mmcv.cnn import NonLocal2d
        return NonLocal2d(channels, mode=mode, sub_sample=sub_sample)
    if impl == 'ours':
        from nonlocal_plugin import DisentangledNonLocal
        return DisentangledNonLocal(channels, mode=mode,
                                    temperature=DNL_TEMPERATURE,
                                    sub_sample=sub_sample, attn_impl='auto')
    from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d
    return DisentangledNonLocal2d(channels, temperature=DNL_TEMPERATURE,
                                  mode=mode, sub_sample=sub_sample)


def measure_block(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Forward + backward of one block on a random ``[B, C, H, W]`` input."""
    import torch
    device = spec['device']
    channels, height, width = spec['shape']
    module = build_block(spec['block'], spec['impl'], spec['mode'], channels,
                         spec['sub_sample']).to(device)
    x = torch.randn(spec['batch'], channels, height, width, device=device,
                    requires_grad=True)
    grad = torch.randn_like(x)  # the upstream gradient, [B, C, H, W]

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        with forward_autocast(spec):
            out = module(x)
        out.backward(grad)

    return time_and_memory(step, spec['repeats'], device)


def measure_mm(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``torch.mm`` of two fp32 ``n x n`` matrices."""
    import torch
    size, device = spec['size'], spec['device']
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    out = torch.empty(size, size, device=device)
    result = time_and_memory(lambda: torch.mm(a, b, out=out),
                             spec['repeats'], device)
    result['flops'] = 2.0 * size**3
    return result


def measure_attention(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The fused softmax attention kernel, forward or forward + backward."""
    import torch

    from nonlocal_plugin.ops import softmax_attention
    queries, head_dim = spec['size']
    device, backward = spec['device'], spec['backward']
    q, k, v = (torch.randn(1, queries, head_dim, device=device,
                           requires_grad=backward) for _ in range(3))
    grad = torch.randn(1, queries, head_dim, device=device)
    scale = head_dim**-0.5

    def step() -> None:
        if backward:
            for t in (q, k, v):
                t.grad = None
            softmax_attention(q, k, v, scale=scale,
                              impl='fused').backward(grad)
        else:
            with torch.no_grad():
                softmax_attention(q, k, v, scale=scale, impl='fused')

    result = time_and_memory(step, spec['repeats'], device)
    result['flops'] = attention_flops(queries, queries, head_dim, backward)
    return result


def _fake_sample(height: int, width: int):
    """A DetDataSample with three boxes and their rectangular masks."""
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    fractions = [(0.1, 0.1, 0.5, 0.6), (0.4, 0.3, 0.9, 0.8),
                 (0.2, 0.55, 0.35, 0.95)]
    boxes = [(x1 * width, y1 * height, x2 * width, y2 * height)
             for x1, y1, x2, y2 in fractions]
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[int(y1):int(y2), int(x1):int(x2)] = 1
    gt = InstanceData()
    gt.bboxes = torch.tensor(boxes, dtype=torch.float32)  # [3, 4] xyxy
    gt.labels = torch.tensor([0, 2, 17])
    gt.masks = BitmapMasks(masks, height, width)
    sample = DetDataSample(metainfo=dict(img_shape=(height, width),
                                         ori_shape=(height, width),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = gt
    return sample


def build_mask_rcnn(impl: str):
    """Mask R-CNN R50-FPN with one NL block in res4, no weights loaded.

    Args:
        impl (str): ``'ours'`` (``nonlocal_plugin.NonLocal2D``) or
            ``'peer'`` (mmcv's ``NonLocal2d``) in the same slot.
    """
    import os.path as osp

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.utils import get_installed_path
    register_all_modules()
    path = osp.join(get_installed_path('mmdet'), '.mim', 'configs',
                    MASK_RCNN_CONFIG)
    model_cfg = Config.fromfile(path).model
    backbone = model_cfg.backbone
    backbone.init_cfg = None  # nothing is downloaded
    backbone.type = 'nonlocal_plugin.ResNetNL'
    backbone.between_blocks = [
        dict(cfg=dict(type=MODEL_BLOCK[impl]), **NL_PLACEMENT)
    ]
    return MODELS.build(model_cfg)


def measure_model(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One Mask R-CNN train step: forward with losses and backward.

    Both implementations get the weights the peer's model is initialised
    with (our block loads mmcv's state dict), so the two sample the same
    proposals and differ only in the NL block. Both workers build two
    models, the peer's and then the one measured, so that they start the
    step with the same allocation history.
    """
    import torch
    device = spec['device']
    height, width = spec['size']
    torch.manual_seed(0)
    weights = build_mask_rcnn('peer').state_dict()
    model = build_mask_rcnn(spec['impl'])
    model.load_state_dict(weights)
    del weights
    model = model.to(device).train()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    data = model.data_preprocessor(
        dict(inputs=[image], data_samples=[_fake_sample(height, width)]),
        True)

    def step() -> None:
        torch.manual_seed(0)  # the same proposals are sampled every step
        model.zero_grad(set_to_none=True)
        with forward_autocast(spec):
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()

    return time_and_memory(step, spec['repeats'], device)


def measure_cuda_probe(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One CUDA operation: whether this process can use the GPU."""
    import torch
    torch.zeros(1, device='cuda').add_(1).item()
    return make_result('ok', time_s=0.0, extra_bytes=0)


MEASURES = {
    'block': measure_block,
    'mm': measure_mm,
    'attention': measure_attention,
    'model': measure_model,
    'cuda_probe': measure_cuda_probe,
}


def run_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Runs one measurement in this process; errors become ``failed``."""
    import torch
    torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    if spec['device'] == 'cpu' and spec.get('cap_bytes'):
        _limit_address_space(int(spec['cap_bytes']))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            result = MEASURES[spec['task']](spec)
        except (RuntimeError, MemoryError) as err:
            return make_result('failed', _first_line(err))
    fallbacks = [str(w.message) for w in caught
                 if 'No fused attention kernel' in str(w.message)]
    if fallbacks:
        result['note'] = fallbacks[0][:160]
    return result


def worker_main(spec: Dict[str, Any], conn) -> None:
    """Entry point of a worker process: sends back :func:`run_spec`."""
    # Keep stdout for the table: libraries that print go to stderr.
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        result = run_spec(spec)
    except BaseException as err:  # reported to the parent, not swallowed
        traceback.print_exc()
        result = make_result('failed', _first_line(err))
    conn.send(result)
    conn.close()
