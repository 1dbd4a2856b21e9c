"""Benchmark of the blocks against their OpenMMLab peers.

``tools/benchmark.py`` is the command line; the logic lives here so that it
can be imported and tested (``tests/test_benchmark.py``). It prints markdown
tables of median time and peak extra memory, with ratios to the peer
(ours / peer, so lower is better), for:

* :class:`~nonlocal_plugin.NonLocal2D` (``attn_impl='fused'``) against
  mmcv's ``NonLocal2d`` in every pairwise mode;
* :class:`~nonlocal_plugin.DisentangledNonLocal` against mmseg's
  ``DisentangledNonLocal2d`` (``embedded_gaussian``, temperature 0.05);
* one train step of Mask R-CNN R50-FPN with one NL block in res4 (after the
  last-but-one residual block, as in the NL paper), built with this
  package's block against the same model with mmcv's block in that slot;
* the rate of the fused softmax attention kernel against ``torch.mm``,

and checks the targets of :data:`TARGETS` against the measured numbers.

How it measures:

* **Isolation.** Every measurement (one implementation, one shape, one mode)
  runs in a process of its own, forked from a ``forkserver`` that has
  imported the libraries but run no operator (or spawned, with
  ``--start-method spawn``). No case inherits another's heap, caches or
  thread pool, and a case that crashes takes only its own process down.
* **Time.** One warm-up step, then the median wall time of ``--repeats``
  steps. A block step is forward plus backward of a fixed upstream gradient
  with the input requiring grad; parameter and input gradients are reset to
  None before each step, so every step allocates them afresh. torch runs
  with one thread per usable core unless ``--threads`` says otherwise.
* **Peak extra memory (CPU).** Before each timed step the worker collects
  garbage, hands glibc's free heap back to the kernel (``malloc_trim(0)``)
  and resets the kernel's resident-set high-water mark ``VmHWM`` to the
  current resident set by writing ``5`` to ``/proc/self/clear_refs``. After
  the step, ``VmHWM`` minus the resident set before the step is the peak
  extra memory. The kernel raises ``VmHWM`` as it maps each page, so no
  short-lived peak is missed (as sampling can) and, unlike ``ru_maxrss``,
  the imports and set-up are not counted. Only pages actually touched count,
  which is what the machine has to provide. Where ``clear_refs`` is not
  writable, the resident set is sampled every millisecond instead; the
  header says which method ran. The largest peak of the timed steps is
  reported.
* **Peak extra memory (CUDA).** ``max_memory_allocated`` after the step,
  minus ``memory_allocated`` before it, after ``reset_peak_memory_stats``.
* **Memory cap.** A peer case whose pairwise tensors alone
  (:func:`peer_pairwise_bytes`) exceed ``--mem-cap-gb`` is reported as
  ``OOM/skipped (needs ~X GB)`` without being run. Every CPU worker also
  limits its address space (``RLIMIT_AS``) to its size at start plus the
  cap, so an underestimated case fails with an allocation error, reported
  as ``failed``, instead of exhausting the shared machine.
* **FLOPs.** ``torch.mm`` of two ``n x n`` matrices: ``2 n^3``. Softmax
  attention of ``N`` queries, ``M`` keys and head dim ``d``: ``4 N M d`` for
  the forward (two products); the backward is counted as 2.5 times the
  forward (five products, as the flash backward recomputes the logits), so
  forward plus backward is 3.5 times the forward. This is FlashAttention's
  convention; the output states it.
"""
import argparse
import ctypes
import gc
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

# constants

Shape = Tuple[int, int, int]  # (C, H, W)

# Shapes of the default grid, by name. res4 and res3 are the C4 and C3 maps
# of an 800x1333 image (strides 16 and 8).
GRID: Dict[str, Shape] = {
    'small': (256, 32, 32),
    'n4096': (512, 64, 64),
    'res4': (1024, 50, 84),
    'res3': (512, 100, 168),
}
QUICK_GRID: Dict[str, Shape] = {'quick': (64, 32, 32)}
NL_MODES = ('gaussian', 'embedded_gaussian', 'dot_product', 'concatenation')
DNL_MODE = 'embedded_gaussian'
DNL_TEMPERATURE = 0.05
BLOCKS = ('nl', 'dnl')
PEERS = {
    'nl': "mmcv's NonLocal2d",
    'dnl': "mmseg's DisentangledNonLocal2d",
}

# The rate rows: torch.mm size, and the attention of res3 (N = 100 * 168
# positions, head dim 512 // 2).
MM_SIZE = 4096
RES3_ATTENTION = (100 * 168, 256)
QUICK_MM_SIZE = 512
QUICK_ATTENTION = (1024, 64)
BACKWARD_FLOP_FACTOR = 2.5  # backward FLOPs / forward FLOPs

MASK_RCNN_CONFIG = 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
IMAGE_SIZE = (800, 1216)  # an 800x1333-style COCO image, padded to 32
# One NL block after the last-but-one residual block of res4 (layer3).
NL_PLACEMENT = dict(stages=(False, False, True, False), after=(-2, ))
MODEL_BLOCK = {'ours': 'nonlocal_plugin.NonLocal2D', 'peer': 'NonLocal2d'}

GB = 1e9
MB = 1e6
DEFAULT_MEM_CAP_GB = 12.0
DEFAULT_TIMEOUT_S = 3600.0
PRELOAD = ('torch', 'nonlocal_plugin', 'mmseg.models.decode_heads.dnl_head')

# The checks of tools/benchmark.py, evaluated by :func:`check_targets`.
TARGETS = (
    'embedded_gaussian at res3: <= 0.15x the peak extra memory and <= 0.8x '
    "the time of mmcv's NonLocal2d",
    "dot_product at res3: >= 10x faster than mmcv's NonLocal2d",
    'concatenation at N=4096, C=512: completes within 1 GB extra '
    "(mmcv's NonLocal2d cannot)",
    'fused softmax attention at res3 (N=16800, d=256, forward): >= 70% of '
    'the fp32 torch.mm rate (4096x4096)',
)

# helper functions


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _proc_status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, such as ``VmHWM``."""
    with open('/proc/self/status', encoding='utf-8') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_bytes() -> int:
    """Resident set of this process."""
    return _proc_status_kb('VmRSS') * 1024


def _reset_hwm() -> bool:
    """Resets ``VmHWM`` to the current resident set; False if it can't."""
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Returns glibc's free heap memory to the kernel (no-op elsewhere)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def cpu_memory_method() -> str:
    """How :class:`PeakMemory` measures on CPU in this process."""
    if _reset_hwm():
        return ('peak RSS growth: VmHWM after the step minus RSS before it '
                '(VmHWM reset via /proc/self/clear_refs, heap trimmed)')
    return 'peak RSS growth: RSS sampled every 1 ms during the step'


class _RssSampler(threading.Thread):
    """Samples the resident set until stopped; keeps the largest value."""

    def __init__(self, interval: float = 1e-3) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


class PeakMemory:
    """Peak memory growth over a ``with`` block, in bytes (``.extra``).

    Args:
        device (str): ``'cpu'`` (resident set, see the module docstring) or
            ``'cuda'`` (the caching allocator's statistics).
    """

    def __init__(self, device: str = 'cpu') -> None:
        self.device = device
        self.extra = 0
        self._base = 0
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device == 'cuda':
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        _malloc_trim()
        if not _reset_hwm():
            self._sampler = _RssSampler()
            self._sampler.start()
        self._base = _rss_bytes()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device == 'cuda':
            import torch
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self._sampler is not None:
            peak = self._sampler.stop()
        else:
            peak = _proc_status_kb('VmHWM') * 1024
        self.extra = max(0, peak - self._base)


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


def _result(status: str, note: str = '', **values) -> Dict[str, Any]:
    return dict(status=status, note=note, **values)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'[:300]


# worker side: runs in a fresh process


def _limit_address_space(cap_bytes: int) -> None:
    """Caps the address space at its current size plus ``cap_bytes``."""
    used = _proc_status_kb('VmSize') * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = used + cap_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _synchronize(device: str) -> None:
    if device == 'cuda':
        import torch
        torch.cuda.synchronize()


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
    return _result('ok', time_s=statistics.median(times), times_s=times,
                   extra_bytes=max(peaks))


def build_block(block: str, impl: str, mode: str, channels: int,
                sub_sample: bool):
    """Our block (``impl='ours'``) or its peer (``impl='peer'``)."""
    if block == 'nl' and impl == 'ours':
        from nonlocal_plugin import NonLocal2D
        return NonLocal2D(channels, mode=mode, sub_sample=sub_sample,
                          attn_impl='fused')
    if block == 'nl':
        from mmcv.cnn import NonLocal2d
        return NonLocal2d(channels, mode=mode, sub_sample=sub_sample)
    if impl == 'ours':
        from nonlocal_plugin import DisentangledNonLocal
        return DisentangledNonLocal(channels, mode=mode,
                                    temperature=DNL_TEMPERATURE,
                                    sub_sample=sub_sample, attn_impl='fused')
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
        module(x).backward(grad)

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
    proposals and differ only in the NL block.
    """
    import torch
    device = spec['device']
    height, width = spec['size']
    torch.manual_seed(0)
    model = build_mask_rcnn('peer')
    if spec['impl'] == 'ours':
        weights = model.state_dict()
        model = build_mask_rcnn('ours')
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
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()

    return time_and_memory(step, spec['repeats'], device)


MEASURES = {
    'block': measure_block,
    'mm': measure_mm,
    'attention': measure_attention,
    'model': measure_model,
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
            return _result('failed', _first_line(err))
    fallbacks = [str(w.message) for w in caught
                 if 'No fused attention kernel' in str(w.message)]
    if fallbacks:
        result['note'] = fallbacks[0][:160]
    return result


def _worker_main(spec: Dict[str, Any], conn) -> None:
    """Entry point of a worker process: sends back :func:`run_spec`."""
    # Keep stdout for the table: libraries that print go to stderr.
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        result = run_spec(spec)
    except BaseException as err:  # reported to the parent, not swallowed
        traceback.print_exc()
        result = _result('failed', _first_line(err))
    conn.send(result)
    conn.close()


# parent side: plans the cases and runs each in its own process


def mp_context(start_method: str):
    """A multiprocessing context; the forkserver preloads the libraries."""
    context = multiprocessing.get_context(start_method)
    if start_method == 'forkserver':
        context.set_forkserver_preload(list(PRELOAD))
    return context


def run_isolated(spec: Dict[str, Any], context,
                 timeout: float) -> Dict[str, Any]:
    """Runs :func:`run_spec` in a fresh process and returns its result.

    Args:
        spec (dict): The measurement.
        context: A multiprocessing context (:func:`mp_context`).
        timeout (float): Seconds before the worker is killed.

    Returns:
        dict: The result; ``failed`` if the worker died or timed out.
    """
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker_main, args=(spec, sender))
    process.start()
    sender.close()
    result, timed_out = None, False
    try:
        if receiver.poll(timeout):
            result = receiver.recv()
        else:
            timed_out = True
    except EOFError:  # the worker died without sending
        pass
    finally:
        receiver.close()
    process.join(timeout=0 if timed_out else 60)
    if process.is_alive():
        process.kill()
        process.join()
    if result is not None:
        return result
    if timed_out:
        return _result('failed', f'timed out after {timeout:g} s')
    if process.exitcode == -signal.SIGKILL:
        return _result('failed', 'killed (out of memory?)')
    return _result('failed', f'worker exited with code {process.exitcode}')


def measure_or_skip(spec: Dict[str, Any], context,
                    timeout: float) -> Dict[str, Any]:
    """Skips a peer block whose pairwise maps exceed the cap, else runs it."""
    if spec['task'] == 'block' and spec['impl'] == 'peer':
        need = peer_pairwise_bytes(spec['block'], spec['mode'],
                                   spec['shape'], batch=spec['batch'],
                                   sub_sample=spec['sub_sample'])
        if spec.get('cap_bytes') and need > spec['cap_bytes']:
            return _result('skipped', f'needs ~{need / GB:.0f} GB',
                           need_bytes=need)
    return run_isolated(spec, context, timeout)


def plan_block_cases(grid: Dict[str, Shape], modes: Sequence[str],
                     blocks: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``(grid name, block, mode)`` of each block row, in table order."""
    cases = []
    for name in grid:
        for block in blocks:
            block_modes = modes if block == 'nl' else (DNL_MODE, )
            cases.extend((name, block, mode) for mode in block_modes)
    return cases


class Runner:
    """Runs the measurements of one invocation and keeps their results.

    Args:
        args (argparse.Namespace): The parsed command line.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = mp_context(args.start_method)
        self.results: Dict[tuple, Dict[str, Any]] = {}
        self.base = dict(device=args.device, threads=args.threads,
                         repeats=args.repeats,
                         cap_bytes=int(args.mem_cap_gb * GB))

    def run(self, key: tuple, **spec) -> Dict[str, Any]:
        """Measures one case, logs it to stderr and stores its result."""
        spec = {**self.base, **spec}
        start = time.perf_counter()
        result = measure_or_skip(spec, self.context, self.args.timeout)
        took = time.perf_counter() - start
        detail = (f"{result['time_s'] * 1e3:.1f} ms, "
                  f"{result['extra_bytes'] / MB:.1f} MB"
                  if result['status'] == 'ok' else result['note'])
        print(f'[benchmark] {" ".join(map(str, key))}: {result["status"]} '
              f'({detail}) in {took:.1f} s', file=sys.stderr, flush=True)
        self.results[key] = result
        return result

    def run_blocks(self, grid: Dict[str, Shape]) -> None:
        args = self.args
        for name, block, mode in plan_block_cases(grid, args.modes,
                                                  args.blocks):
            for impl in ('ours', 'peer'):
                self.run(('block', name, block, mode, impl), task='block',
                         block=block, impl=impl, mode=mode,
                         shape=grid[name], batch=args.batch,
                         sub_sample=args.sub_sample)

    def run_rates(self, mm_size: int, attention: Tuple[int, int]) -> None:
        self.run(('mm', mm_size), task='mm', size=mm_size)
        for backward in (False, True):
            self.run(('attention', attention, backward), task='attention',
                     size=attention, backward=backward)

    def run_model(self, image_size: Tuple[int, int]) -> None:
        for impl in ('ours', 'peer'):
            self.run(('model', image_size, impl), task='model', impl=impl,
                     size=image_size, repeats=self.args.model_repeats)


# report

COMPARISON_HEADER = ('case', 'peer', 'C x H x W', 'N', 'mode', 'ours ms',
                     'peer ms', 'time ours/peer', 'ours MB', 'peer MB',
                     'memory ours/peer')
RATE_HEADER = ('kernel', 'size', 'pass', 'ms', 'GFLOP', 'GFLOP/s',
               'fraction of mm')
MODEL_CASE = ('Mask R-CNN R50-FPN train step, 1 NL after res4 residual '
              'block 5 of 6')


def _num(value: float) -> str:
    if value >= 100:
        return f'{value:.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _ok(result: Dict[str, Any] | None) -> bool:
    return result is not None and result['status'] == 'ok'


def _ratio(ours: Dict[str, Any], peer: Dict[str, Any], field: str) -> str:
    if not (_ok(ours) and _ok(peer)) or not peer[field]:
        return 'n/a'
    return f'{ours[field] / peer[field]:.3f}'


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


class Report:
    """Turns the results into markdown tables.

    A failed case's message is long, so its cell reads ``failed [i]`` and
    the message is listed under the tables as note ``i``; so is a warning
    that came with a number (a fused kernel that fell back).

    Args:
        results (dict): :attr:`Runner.results`.
        grid (dict): The grid the block rows were measured on.
    """

    def __init__(self, results: Dict[tuple, Dict[str, Any]],
                 grid: Dict[str, Shape]) -> None:
        self.results = results
        self.grid = grid
        self.notes: List[str] = []

    def _note(self, note: str) -> str:
        if note not in self.notes:
            self.notes.append(note)
        return f'[{self.notes.index(note) + 1}]'

    def cell(self, result: Dict[str, Any], field: str) -> str:
        """A time (ms) or memory (MB) cell, or why there is no number.

        A number with a note (a fused kernel that fell back to the
        reference path) gets the note's marker too.
        """
        if result['status'] == 'ok':
            scale = 1e3 if field == 'time_s' else 1 / MB
            number = _num(result[field] * scale)
            if result['note']:
                number += ' ' + self._note(result['note'])
            return number
        if result['status'] == 'skipped':
            return f"OOM/skipped ({result['note']})"
        return 'failed ' + self._note(result['note'])

    def _pair_row(self, labels: Sequence[str], key: tuple) -> List[str]:
        ours, theirs = self.results[key], self.results[key[:-1] + ('peer', )]
        return [
            *labels,
            self.cell(ours, 'time_s'),
            self.cell(theirs, 'time_s'),
            _ratio(ours, theirs, 'time_s'),
            self.cell(ours, 'extra_bytes'),
            self.cell(theirs, 'extra_bytes'),
            _ratio(ours, theirs, 'extra_bytes'),
        ]

    def comparison_rows(self) -> List[List[str]]:
        """One row per block case and model, ours against the peer."""
        rows = []
        for key in self.results:
            if key[-1] != 'ours':
                continue
            if key[0] == 'block':
                _, name, block, mode, _ = key
                channels, height, width = self.grid[name]
                labels = (f'{block.upper()} {name}', PEERS[block],
                          f'{channels} x {height} x {width}',
                          str(height * width), mode)
            else:  # model; N is that of res4 (stride 16) once padded
                height, width = key[1]
                positions = (_ceil_to(height, 32) // 16 *
                             (_ceil_to(width, 32) // 16))
                labels = (MODEL_CASE, PEERS['nl'], f'3 x {height} x {width}',
                          str(positions), 'embedded_gaussian')
            rows.append(self._pair_row(labels, key))
        return rows

    def rate_rows(self) -> List[List[str]]:
        """GFLOP/s of each rate case and its fraction of the mm rate."""
        mm_rate = _mm_rate(self.results)
        rows = []
        for key, result in self.results.items():
            if key[0] == 'mm':
                labels = ['torch.mm fp32', f'{key[1]} x {key[1]}', 'forward']
            elif key[0] == 'attention':
                (queries, head_dim), backward = key[1], key[2]
                labels = [
                    'softmax_attention fused fp32',
                    f'N=M={queries}, d={head_dim}',
                    'forward + backward' if backward else 'forward'
                ]
            else:
                continue
            if not _ok(result):
                rows.append(labels + [self.cell(result, 'time_s')] +
                            ['n/a'] * 3)
                continue
            rate = result['flops'] / result['time_s']
            rows.append(labels + [
                _num(result['time_s'] * 1e3),
                f"{result['flops'] / 1e9:.1f}",
                _num(rate / 1e9),
                f'{rate / mm_rate:.3f}' if mm_rate else 'n/a',
            ])
        return rows

    def lines(self) -> List[str]:
        """The tables and the notes their cells point to."""
        lines = []
        rows = self.comparison_rows()
        if rows:
            lines += _table(COMPARISON_HEADER, rows) + ['']
        rates = self.rate_rows()
        if rates:
            lines += [
                'FLOPs: torch.mm 2 n^3; attention forward 4 N M d, backward '
                f'{BACKWARD_FLOP_FACTOR:g}x the forward (the flash backward '
                'recomputes the logits), so forward + backward = '
                f'{1 + BACKWARD_FLOP_FACTOR:g}x the forward.', ''
            ]
            lines += _table(RATE_HEADER, rates) + ['']
        if self.notes:
            lines += ['Notes:']
            lines += [f'{i}. {note}' for i, note in enumerate(self.notes, 1)]
            lines += ['']
        return lines


# targets


def _mm_rate(results: Dict[tuple, Dict[str, Any]]) -> float | None:
    mm = next((r for k, r in results.items() if k[0] == 'mm'), None)
    return mm['flops'] / mm['time_s'] if _ok(mm) else None


def _block_pair(results, name: str | None, mode: str):
    return (results.get(('block', name, 'nl', mode, 'ours')),
            results.get(('block', name, 'nl', mode, 'peer')))


def _check_softmax(results, res3: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, res3, 'embedded_gaussian')
    if not (_ok(ours) and _ok(theirs)):
        return 'NOT RUN', 'no res3 embedded_gaussian rows with both numbers'
    time_ratio = ours['time_s'] / theirs['time_s']
    mem_ratio = ours['extra_bytes'] / max(theirs['extra_bytes'], 1)
    verdict = 'PASS' if mem_ratio <= 0.15 and time_ratio <= 0.8 else 'FAIL'
    return verdict, (f'memory {mem_ratio:.3f}x '
                     f"({ours['extra_bytes'] / MB:.0f} vs "
                     f"{theirs['extra_bytes'] / MB:.0f} MB), time "
                     f"{time_ratio:.3f}x ({ours['time_s'] * 1e3:.0f} vs "
                     f"{theirs['time_s'] * 1e3:.0f} ms)")


def _check_dot_product(results, res3: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, res3, 'dot_product')
    if not (_ok(ours) and _ok(theirs)):
        return 'NOT RUN', 'no res3 dot_product rows with both numbers'
    speedup = theirs['time_s'] / ours['time_s']
    verdict = 'PASS' if speedup >= 10 else 'FAIL'
    return verdict, (f"{speedup:.1f}x faster ({ours['time_s'] * 1e3:.1f} vs "
                     f"{theirs['time_s'] * 1e3:.1f} ms)")


def _check_concatenation(results, n4096: str | None) -> Tuple[str, str]:
    ours, theirs = _block_pair(results, n4096, 'concatenation')
    if ours is None or theirs is None:
        return 'NOT RUN', 'no N=4096, C=512 concatenation rows'
    peer = ('completed' if _ok(theirs) else
            f"{theirs['status']}: {theirs['note']}")
    if not _ok(ours):
        return 'FAIL', f"ours {ours['status']}: {ours['note']}; mmcv {peer}"
    fits = ours['extra_bytes'] <= 1 * GB
    verdict = 'PASS' if fits and not _ok(theirs) else 'FAIL'
    return verdict, (f"ours completed with {ours['extra_bytes'] / MB:.0f} "
                     f"MB extra in {ours['time_s']:.2f} s; mmcv {peer}")


def _check_rate(results) -> Tuple[str, str]:
    mm_rate = _mm_rate(results)
    attention = results.get(('attention', RES3_ATTENTION, False))
    if mm_rate is None or not _ok(attention):
        return 'NOT RUN', ('no res3-scale attention rate row '
                           f'(N={RES3_ATTENTION[0]}, d={RES3_ATTENTION[1]})')
    rate = attention['flops'] / attention['time_s']
    verdict = 'PASS' if rate >= 0.7 * mm_rate else 'FAIL'
    return verdict, (f'{rate / mm_rate:.1%} ({rate / 1e9:.0f} vs '
                     f'{mm_rate / 1e9:.0f} GFLOP/s)')


def _grid_name(grid: Dict[str, Shape], shape: Shape) -> str | None:
    return next((name for name, s in grid.items() if s == shape), None)


def check_targets(results: Dict[tuple, Dict[str, Any]],
                  grid: Dict[str, Shape]) -> List[Tuple[str, str]]:
    """Checks :data:`TARGETS` against the measured results.

    Args:
        results (dict): :attr:`Runner.results`.
        grid (dict): The grid the block rows were measured on; a target is
            ``NOT RUN`` when its shape is not in it.

    Returns:
        list[tuple[str, str]]: ``(verdict, line)`` per target, the verdict
        ``'PASS'``, ``'FAIL'`` or ``'NOT RUN'``.
    """
    res3 = _grid_name(grid, GRID['res3'])
    n4096 = _grid_name(grid, GRID['n4096'])
    checks = (_check_softmax(results, res3),
              _check_dot_product(results, res3),
              _check_concatenation(results, n4096), _check_rate(results))
    return [(verdict, f'- [{verdict}] {target}: {detail}')
            for target, (verdict, detail) in zip(TARGETS, checks)]


def machine_line(args: argparse.Namespace) -> str:
    """The header: machine, load, torch, threads and device."""
    import torch
    line = (f'Machine: {cpu_model()}, {os.cpu_count()} cores '
            f'({usable_cores()} usable, 1-min load {os.getloadavg()[0]:.1f} '
            f'at start), torch {torch.__version__}, {args.threads} threads, '
            f'device {args.device}')
    if args.device == 'cuda':
        line += f' ({torch.cuda.get_device_name()})'
    return line


def render(args: argparse.Namespace, grid: Dict[str, Shape],
           results: Dict[tuple, Dict[str, Any]], machine: str,
           targets: List[Tuple[str, str]]) -> str:
    """The report: header, tables, failures and targets.

    Args:
        args (argparse.Namespace): The parsed command line.
        grid (dict): The grid of the block rows.
        results (dict): :attr:`Runner.results`.
        machine (str): :func:`machine_line`, taken before the run.
        targets (list): :func:`check_targets`.

    Returns:
        str: Markdown.
    """
    memory = ('CUDA max_memory_allocated growth' if args.device == 'cuda'
              else cpu_memory_method())
    lines = [
        '# nonlocal_plugin benchmark', '', machine, '',
        f'Each case runs in its own process ({args.start_method}). Time: '
        f'median of {args.repeats} forward + backward steps after 1 warm-up '
        f'(model: {args.model_repeats}), batch {args.batch}, fp32. Memory: '
        f'{memory}, the largest of the timed steps; 1 MB = 1e6 bytes. '
        'Ratios are ours / peer (lower is better). Peers whose pairwise '
        f'tensors exceed the {args.mem_cap_gb:g} GB cap are not run.', ''
    ]
    lines += Report(results, grid).lines()
    lines += ['Targets:'] + [line for _, line in targets]
    return '\n'.join(lines) + '\n'


# command line


def _parse_shape(text: str) -> Tuple[str, Shape]:
    """A grid entry: a name of :data:`GRID` or ``CxHxW``."""
    if text in GRID:
        return text, GRID[text]
    try:
        channels, height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'grid entries are {tuple(GRID)} or CxHxW such as 512x64x64, '
            f'got {text!r}') from None
    return text, (channels, height, width)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/benchmark.py``."""
    parser = argparse.ArgumentParser(
        prog='tools/benchmark.py',
        description='Time and peak extra memory of forward + backward of '
        "this package's blocks against mmcv's NonLocal2d and mmseg's "
        'DisentangledNonLocal2d, each case in its own process.')
    parser.add_argument(
        '--grid', nargs='+', type=_parse_shape, metavar='SHAPE',
        help=f'shapes: names {tuple(GRID)} or CxHxW. Default: all names')
    parser.add_argument('--modes', nargs='+', choices=NL_MODES,
                        default=list(NL_MODES), metavar='MODE',
                        help=f'NL pairwise modes, of {NL_MODES}. Default: '
                        'all (DNL always runs embedded_gaussian)')
    parser.add_argument('--blocks', nargs='+', choices=BLOCKS,
                        default=list(BLOCKS), metavar='BLOCK',
                        help='block families: nl (against mmcv), dnl '
                        '(against mmseg). Default: both')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny grid and rate sizes, no model')
    parser.add_argument('--repeats', type=_positive_int, default=3,
                        help='timed steps after 1 warm-up. Default: 3')
    parser.add_argument('--batch', type=_positive_int, default=1,
                        help='batch size of the block rows. Default: 1')
    parser.add_argument('--sub-sample', action='store_true',
                        help='build the blocks with sub_sample=True')
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        help='Default: cuda when available, else cpu')
    parser.add_argument('--threads', type=_positive_int,
                        default=usable_cores(),
                        help='torch threads. Default: usable cores')
    parser.add_argument(
        '--mem-cap-gb', type=float, default=DEFAULT_MEM_CAP_GB,
        help='per-case memory cap (GB): peers needing more are skipped; '
        f'CPU workers cannot grow past it. Default: {DEFAULT_MEM_CAP_GB:g}')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT_S,
                        help='seconds per case before it is killed')
    parser.add_argument('--skip-blocks', action='store_true',
                        help='leave out the block rows')
    parser.add_argument('--skip-rates', action='store_true',
                        help='leave out the torch.mm / attention rate rows')
    parser.add_argument('--skip-model', action='store_true',
                        help='leave out the Mask R-CNN train step')
    parser.add_argument('--image-size', nargs=2, type=int,
                        default=list(IMAGE_SIZE), metavar=('H', 'W'),
                        help='model input size. Default: 800 1216')
    parser.add_argument('--model-repeats', type=_positive_int, default=3,
                        help='timed model steps after 1 warm-up. Default: 3')
    parser.add_argument(
        '--start-method', choices=('forkserver', 'spawn'),
        default='forkserver',
        help='how workers start: forked from a server that imported the '
        'libraries once, or each a new interpreter (slower to start). '
        'Default: forkserver')
    parser.add_argument('--out', help='also write the report to this file')
    parser.add_argument('--strict', action='store_true',
                        help='exit 1 unless every target passes')
    return parser


def _finish_args(args: argparse.Namespace) -> Dict[str, Shape]:
    """Fills defaults that depend on other options; returns the grid."""
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.quick:
        args.skip_model = True
    if args.grid:
        return dict(args.grid)
    return dict(QUICK_GRID if args.quick else GRID)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints the report; returns the exit code."""
    args = build_parser().parse_args(argv)
    grid = _finish_args(args)
    machine = machine_line(args)
    runner = Runner(args)
    if not args.skip_blocks:
        runner.run_blocks(grid)
    if not args.skip_rates:
        runner.run_rates(QUICK_MM_SIZE if args.quick else MM_SIZE,
                         QUICK_ATTENTION if args.quick else RES3_ATTENTION)
    if not args.skip_model:
        runner.run_model(tuple(args.image_size))
    targets = check_targets(runner.results, grid)
    report = render(args, grid, runner.results, machine, targets)
    sys.stdout.write(report)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(report)
    failed = any(verdict != 'PASS' for verdict, _ in targets)
    return 1 if args.strict and failed else 0


if __name__ == '__main__':
    # Re-import under the package name, so that the workers' entry point
    # pickles as nonlocal_plugin.benchmark._worker_main.
    from nonlocal_plugin.benchmark import main as _main
    sys.exit(_main())
