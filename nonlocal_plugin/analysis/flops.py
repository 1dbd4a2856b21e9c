"""FLOPs of models with non-local, GC and DNL blocks, by mmengine's counter.

The blocks: "Non-local Neural Networks", https://arxiv.org/abs/1711.07971;
GCNet, https://arxiv.org/abs/1904.11492; DNL,
https://arxiv.org/abs/2006.06668.

:class:`mmengine.analysis.FlopAnalyzer` (the counter behind mmdet's and
mmseg's ``get_flops.py``) traces the model and counts the ops it has handles
for. Out of the box it misses what these blocks spend:

* ``aten::scaled_dot_product_attention``, the fused attention, counts as
  zero (62 % of an NL block at res4);
* custom autograd functions (``_ChunkedSoftmaxAttention``,
  ``_ChunkedConcatenation``) appear as ``prim::PythonOp`` nodes without a
  handle;
* softmax, the means of DNL's whitening and GC's average pooling, and the
  sub-sampling max-pool have no handle;
* ``aten::matmul`` drops the batch of a broadcast second operand (a
  ``[C, C'] @ [B, C', N]`` product counts ``B`` times too little).

:data:`FLOP_HANDLES` adds handles in mmengine's convention: **one
multiply-add counts as one flop**; an elementwise add, multiply or
activation counts nothing (as ReLU and residual adds in mmengine); a
pooling or mean counts one per input element (as mmengine's
``adaptive_avg_pool2d``); a softmax counts one per element (its
exponential). The fused and reference paths of a block then count the
same: SDPA counts its two products and its softmax, exactly what the
reference path's two ``matmul`` s and ``softmax`` count, and zero columns
that pad a head to one width are not counted (``dot_product``'s fused path
regroups the products and is really cheaper; it counts what it does).
"""
from __future__ import annotations

from math import prod
from typing import Any, Dict, List, Optional, Sequence

from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from torch import nn

from ..ops.chunked import _ChunkedSoftmaxAttention
from ..ops.concatenation import _ChunkedConcatenation

CONVENTION = ('one multiply-add = 1 flop (mmengine); elementwise adds, '
              'multiplies and activations: 0; softmax, mean and pooling: '
              '1 per element')

# Ops that keep the last dim as the padded head width was made.
_PASS_THROUGH = ('aten::contiguous', 'aten::unsqueeze', 'aten::to',
                 'aten::clone', 'aten::view', 'aten::reshape')
_PADS = ('aten::constant_pad_nd', 'aten::pad')

# helper functions


def _width(value: Any) -> int:
    """The last dim of a jit value before zero padding to a head width.

    :mod:`nonlocal_plugin.ops.attention` pads query, key and value rows with
    zero columns to one SDPA head width; those columns do no work.
    """
    width = get_shape(value)[-1]
    node = value.node()
    while node.kind() in _PASS_THROUGH:
        node = list(node.inputs())[0].node()
    if node.kind() in _PADS:
        source = get_shape(list(node.inputs())[0])
        if source is not None:
            return min(width, source[-1])
    return width


def _tensor_inputs(inputs: List[Any]) -> List[List[int]]:
    shapes = [get_shape(v) for v in inputs]
    return [s for s in shapes if s is not None]


# op handles


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention``: ``q k^T``, softmax, ``p v``.

    ``q [*, N, E]``, ``k [*, M, E]``, ``v [*, M, Ev]`` give
    ``* N M (E + Ev)`` multiply-adds plus ``* N M`` for the softmax.
    """
    q_shape, k_shape = get_shape(inputs[0]), get_shape(inputs[1])
    batch = prod(q_shape[:-2])
    pairs = batch * q_shape[-2] * k_shape[-2]
    depth = min(_width(inputs[0]), _width(inputs[1]))
    return pairs * (depth + _width(inputs[2])) + pairs


def chunked_softmax_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``_ChunkedSoftmaxAttention(q [B, N, Cq], k [B, M, Cq], v [B, M, Cv])``:
    the same count as SDPA (and the reference path)."""
    q_shape, k_shape, v_shape = _tensor_inputs(inputs)[:3]
    pairs = prod(q_shape[:-1]) * k_shape[-2]
    return pairs * (q_shape[-1] + v_shape[-1]) + pairs


def chunked_concatenation_flop_jit(inputs: List[Any],
                                   outputs: List[Any]) -> int:
    """``_ChunkedConcatenation(a [B, N], b [B, M], v [B, M, Cv])``:
    ``ReLU(a_i + b_j) v_j`` is ``B N M Cv`` multiply-adds, as the reference
    path's ``matmul`` (the add and ReLU count nothing)."""
    a_shape, b_shape, v_shape = _tensor_inputs(inputs)[:3]
    return prod(a_shape) * b_shape[-1] * v_shape[-1]


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul`` with broadcasting of either operand's batch."""
    first, second = (get_shape(v) for v in inputs[:2])
    if len(first) == 1:
        first = [1] + list(first)
    if len(second) == 1:
        second = list(second) + [1]
    out = get_shape(outputs[0])
    batch = prod(out[:-2]) if len(out) > 2 else 1
    return batch * first[-2] * first[-1] * second[-1]


def per_input_element(inputs: List[Any], outputs: List[Any]) -> int:
    """One flop per element of the first input (softmax, mean, pooling)."""
    return prod(get_shape(inputs[0]))


FLOP_HANDLES: Dict[str, Any] = {
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    f'prim::PythonOp.{_ChunkedSoftmaxAttention.__name__}':
    chunked_softmax_flop_jit,
    f'prim::PythonOp.{_ChunkedConcatenation.__name__}':
    chunked_concatenation_flop_jit,
    'aten::matmul': matmul_flop_jit,
    'aten::softmax': per_input_element,
    'aten::mean': per_input_element,
    'aten::max_pool1d': per_input_element,
    'aten::max_pool2d': per_input_element,
    'aten::max_pool3d': per_input_element,
    'aten::avg_pool1d': per_input_element,
    'aten::avg_pool2d': per_input_element,
    'aten::avg_pool3d': per_input_element,
}

# main functions


def flop_analyzer(model: nn.Module, inputs: Sequence) -> FlopAnalyzer:
    """mmengine's :class:`FlopAnalyzer` with :data:`FLOP_HANDLES` added.

    Args:
        model (nn.Module): The model; it is traced with ``inputs``.
        inputs (Sequence): The positional inputs of ``model``'s forward.

    Returns:
        FlopAnalyzer: Warnings about unsupported ops and uncalled modules
        are off; ask ``unsupported_ops()`` instead.
    """
    analyzer = FlopAnalyzer(model, tuple(inputs))
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_flops(model: nn.Module, *inputs) -> int:
    """Total flops of ``model(*inputs)`` (see :data:`CONVENTION`)."""
    return int(flop_analyzer(model, inputs).total())


def parameters(module: nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def share(part: float, whole: Optional[float]) -> str:
    """``part`` as a percentage of ``whole``, or ``'-'``."""
    return f'{100.0 * part / whole:.2f} %' if whole else '-'
