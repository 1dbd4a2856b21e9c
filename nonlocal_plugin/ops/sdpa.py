"""Which of torch's fused attention kernels (SDPA backends) take an input.

torch's ``scaled_dot_product_attention`` silently falls back to its math
backend, which builds the ``[N, M]`` map, whenever no fused kernel accepts
the device, dtype or head width. The blocks must never do that, so they ask
for specific backends and learn up front which of them accept an input:

* The API differs between releases: ``torch.nn.attention.sdpa_kernel``
  (torch >= 2.3) and ``torch.backends.cuda.sdp_kernel`` (2.1-2.2, whose
  flags also govern the CPU kernel) are both supported.
* Whether a backend accepts ``(device, dtype, head width)`` is found by
  running it once on a tiny input with every other backend disabled, forward
  and, where gradients are needed, backward. The answer is cached. The
  kernels' constraints depend on the device, dtype and width only (torch
  2.1-2.13: CPU flash takes fp32, fp64 and bf16 on 2.1, also fp16 later;
  CUDA flash wants fp16/bf16 and widths up to 256; memory-efficient
  attention takes wider heads). A probe on 4 positions cannot run out of
  memory, so a failure there means "not accepted".

The real call then runs with that backend alone and no ``try``: an
out-of-memory error, or any other error, reaches the caller unchanged.

Graph capture (:func:`graph_capture`) changes what the callers may do:

* ``'export'`` (``torch.jit.trace``, ``torch.onnx.export`` with either
  exporter, ``torch.export``): the graph must hold for every input size, so
  nothing may depend on a size through Python (query chunks, loops over
  chunks, the probe), and custom autograd functions do not export
  faithfully. The callers then write plain differentiable ops.
* ``'compile'`` (``torch.compile``): the probe would break the graph, so
  :func:`compile_time_backend` runs it once at trace time and hands dynamo
  its answer as a constant; the backend switch itself compiles.

The switches are feature-detected: torch 2.1 has neither
``torch.compiler.is_compiling`` nor ``is_exporting``.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch 2.1-2.2
    SDPBackend = sdpa_kernel = None

# Fused backends per device type, in order of preference. None of them
# builds the attention map.
FUSED_BACKENDS = {
    'cpu': ('flash', ),
    'cuda': ('flash', 'efficient', 'cudnn'),
}
_ENUM_NAMES = {
    'flash': 'FLASH_ATTENTION',
    'efficient': 'EFFICIENT_ATTENTION',
    'cudnn': 'CUDNN_ATTENTION',
}


def backend_available(name: str) -> bool:
    """Whether this torch can select backend ``name`` at all."""
    if sdpa_kernel is not None:
        return hasattr(SDPBackend, _ENUM_NAMES[name])
    return name in ('flash', 'efficient')  # 2.1-2.2: no cuDNN switch


@contextlib.contextmanager
def only_backend(name: str) -> Iterator[None]:
    """Runs SDPA with backend ``name`` alone (no math fallback)."""
    if sdpa_kernel is not None:
        with sdpa_kernel([getattr(SDPBackend, _ENUM_NAMES[name])]):
            yield
        return
    with torch.backends.cuda.sdp_kernel(
            enable_flash=name == 'flash',
            enable_mem_efficient=name == 'efficient',
            enable_math=False):
        yield


def _device_key(device: torch.device) -> str:
    if device.type == 'cuda':
        index = (device.index
                 if device.index is not None else torch.cuda.current_device())
        return f'cuda:{index}'
    return device.type


@functools.lru_cache(maxsize=None)
def _accepts(device: str, dtype: torch.dtype, width: int, value_width: int,
             name: str, grad: bool) -> bool:
    """Runs backend ``name`` once on tiny ``[1, 1, 4, width]`` queries and
    keys and ``[1, 1, 4, value_width]`` values."""
    if not backend_available(name):
        return False
    # Not random: the probe must leave the global generator alone, or a run
    # would draw other numbers after the first call than a resumed one.
    q = torch.ones(1, 1, 4, width, device=device, dtype=dtype,
                   requires_grad=grad)
    v = torch.ones(1, 1, 4, value_width, device=device, dtype=dtype,
                   requires_grad=grad)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with only_backend(name), torch.enable_grad():
                out = F.scaled_dot_product_attention(q, q, v, scale=1.0)
                if grad:
                    out.sum().backward()
    except RuntimeError:
        return False
    return True


def fused_backend(device: torch.device,
                  dtype: torch.dtype,
                  width: int,
                  *,
                  value_width: Optional[int] = None,
                  grad: bool = False) -> Optional[str]:
    """The first fused backend that takes this input, or None.

    Args:
        device (torch.device): Where the attention runs.
        dtype (torch.dtype): The kernel's input dtype.
        width (int): The head width of the queries and keys.
        value_width (int, optional): The head width of the values.
            Default: ``width``.
        grad (bool): Gradients will flow back through the call.

    Returns:
        str or None: ``'flash'``, ``'efficient'`` or ``'cudnn'``.
    """
    value_width = width if value_width is None else value_width
    for name in FUSED_BACKENDS.get(device.type, ()):
        if _accepts(_device_key(device), dtype, int(width), int(value_width),
                    name, grad):
            return name
    return None


def backend_table(device: torch.device, dtypes: Sequence[torch.dtype],
                  widths: Sequence[int],
                  grad: bool = True) -> Tuple[Tuple[str, int, str], ...]:
    """``(dtype, width, backend or 'chunked')`` for each combination."""
    return tuple((str(dtype).replace('torch.', ''), width,
                  fused_backend(device, dtype, width, grad=grad) or 'chunked')
                 for dtype in dtypes for width in widths)


# graph capture: export and compile


def _dynamo_compiling() -> bool:
    """Whether dynamo traces (``torch.compile``, ``torch.export``)."""
    is_compiling = getattr(torch.compiler, 'is_compiling', None)  # >= 2.3
    if is_compiling is not None:
        return is_compiling()
    dynamo = sys.modules.get('torch._dynamo')  # 2.1-2.2
    return dynamo is not None and dynamo.is_compiling()


def _exporting() -> bool:
    """Whether a trace is meant for export: ``torch.jit.trace``, ONNX
    export (either exporter), ``torch.export``."""
    if torch.jit.is_tracing():
        return True
    is_exporting = getattr(torch.compiler, 'is_exporting', None)  # >= 2.6
    if is_exporting is not None and is_exporting():
        return True
    onnx = sys.modules.get('torch.onnx')
    return onnx is not None and onnx.is_in_onnx_export()


def onnx_torchscript_export() -> bool:
    """Whether the TorchScript-based ONNX exporter is tracing."""
    onnx = sys.modules.get('torch.onnx')
    return (onnx is not None and onnx.is_in_onnx_export()
            and not _dynamo_compiling())


def graph_capture() -> Optional[str]:
    """``'export'``, ``'compile'``, or None when running eagerly.

    ``'export'`` for ``torch.jit.trace``, ``torch.onnx.export`` (TorchScript
    and dynamo exporters) and ``torch.export``; ``'compile'`` for
    ``torch.compile``.
    """
    if _dynamo_compiling():
        return 'export' if _exporting() else 'compile'
    return 'export' if _exporting() else None


def _backend_constant(device_type: str, device_index: Optional[int],
                      dtype: torch.dtype, width: int, value_width: int,
                      grad: bool) -> Optional[str]:
    device = (torch.device(device_type) if device_index is None else
              torch.device(device_type, device_index))
    return fused_backend(device, dtype, width, value_width=value_width,
                         grad=grad)


_assume_constant = getattr(torch.compiler, 'assume_constant_result', None)
if _assume_constant is not None:
    _backend_constant = _assume_constant(_backend_constant)


def compile_time_backend(device: torch.device,
                         dtype: torch.dtype,
                         width: int,
                         *,
                         value_width: Optional[int] = None,
                         grad: bool = False) -> Optional[str]:
    """:func:`fused_backend` for code that ``torch.compile`` traces.

    The probe runs eagerly, once, while dynamo traces, and its answer is a
    constant of the graph (``torch.compiler.assume_constant_result``), so
    the graph does not break.

    Args:
        device (torch.device): Where the attention runs.
        dtype (torch.dtype): The kernel's input dtype.
        width (int): The head width of the queries and keys.
        value_width (int, optional): The head width of the values.
            Default: ``width``.
        grad (bool): Gradients will flow back through the call.

    Returns:
        str or None: As :func:`fused_backend`.
    """
    value_width = width if value_width is None else value_width
    return _backend_constant(device.type, device.index, dtype, int(width),
                             int(value_width), bool(grad))
