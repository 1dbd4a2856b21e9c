"""Export: every block in every mode, and a toy Mask R-CNN backbone with
blocks, traces and exports to ONNX through both exporters; onnxruntime then
matches PyTorch within 1e-4 at two input sizes (dynamic spatial dims).

The TorchScript exporter runs for every case; the dynamo exporter (seconds
per case) for one block per family in the default suite and for the rest in
the slow suite. ``torch.jit.script`` works for ContextBlock and refuses the
non-local blocks with a message naming what works.
"""
import inspect
import io
import warnings

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import DefaultScope

from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    NonLocal1D,
    NonLocal2D,
    NonLocal3D,
)
from nonlocal_plugin.blocks.non_local import MODES

C = 16
# name: (factory, two input shapes)
BLOCKS = {
    **{
        f'nl-{mode}{"-sub" if sub else ""}':
        (lambda mode=mode, sub=sub: NonLocal2D(
            C, sub_sample=sub, mode=mode, zeros_init=False),
         ((2, C, 8, 12), (2, C, 12, 6)))
        for mode in MODES for sub in (False, True)
    },
    **{
        f'dnl-{mode}': (lambda mode=mode: DisentangledNonLocal(
            C, mode=mode, zeros_init=False), ((2, C, 8, 12), (2, C, 12, 6)))
        for mode in MODES
    },
    'dnl-unary-only': (lambda: DisentangledNonLocal(
        C, use_pairwise=False, sub_sample=True, zeros_init=False),
                       ((2, C, 8, 12), (2, C, 12, 6))),
    'gc-att-add': (lambda: ContextBlock(C, ratio=1 / 4),
                   ((2, C, 8, 12), (2, C, 12, 6))),
    'gc-avg-mul-gate': (lambda: ContextBlock(
        C, ratio=1 / 4, pooling_type='avg',
        fusion_types=('channel_mul', 'channel_gate')),
                        ((2, C, 8, 12), (2, C, 12, 6))),
    'nl1d-embedded_gaussian-sub': (lambda: NonLocal1D(
        C, True, zeros_init=False), ((2, C, 20), (2, C, 14))),
    'nl3d-concatenation-sub': (lambda: NonLocal3D(
        C, True, mode='concatenation', zeros_init=False),
                               ((2, C, 2, 6, 8), (2, C, 3, 4, 6))),
}
# One per family for the dynamo exporter in the default suite.
FAST_DYNAMO = ('nl-concatenation-sub', 'dnl-embedded_gaussian', 'gc-att-add')

# helper functions


def make_block(name):
    """The block in eval mode with every weight away from its init (the
    output convs start at zero, which would make every block the identity).
    """
    block = BLOCKS[name][0]().eval()
    with torch.no_grad():
        for param in block.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return block


def inputs(name):
    return [torch.randn(*shape) for shape in BLOCKS[name][1]]


def dynamic_axes(rank):
    spatial = {axis: f'd{axis}' for axis in range(2, rank)}
    return {'x': spatial, 'y': spatial}


def torchscript_exporter_options():
    """``dynamo=False`` where this torch's export has that switch (>= 2.5);
    before, the TorchScript exporter is the only one."""
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        return dict(dynamo=False)
    return {}


def export_torchscript(module, x):
    """ONNX bytes from the TorchScript exporter, spatial dims dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, (x, ), buffer,
                          **torchscript_exporter_options(), opset_version=17,
                          input_names=['x'], output_names=['y'],
                          dynamic_axes=dynamic_axes(x.dim()))
    return buffer.getvalue()


def export_dynamo(module, x):
    """ONNX bytes from the dynamo exporter, spatial dims dynamic."""
    pytest.importorskip('onnxscript')
    if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
        pytest.skip(f'torch {torch.__version__} has no dynamo=True exporter')
    # torch.export guards a pooled 1-D length against 1 (L // 2 != 1).
    low = 4 if x.dim() == 3 else 2
    dims = {
        axis: torch.export.Dim(f'd{axis}', min=low, max=1024)
        for axis in range(2, x.dim())
    }
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(module, (x, ), dynamo=True,
                                    opset_version=18, input_names=['x'],
                                    dynamic_shapes={'x': dims},
                                    verbose=False)
    return program.model_proto.SerializeToString()


def assert_onnx_matches(module, onnx_bytes, xs):
    """onnxruntime (default optimisations) equals PyTorch within 1e-4."""
    ort = pytest.importorskip('onnxruntime')
    session = ort.InferenceSession(onnx_bytes,
                                   providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    for x in xs:
        with torch.no_grad():
            want = module(x)
        want = want if isinstance(want, (tuple, list)) else (want, )
        got = session.run(None, {name: x.numpy()})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


def _ids(params):
    return [p if isinstance(p, str) else p.values[0] for p in params]


# blocks


def test_blocks_are_not_the_identity_here():
    # Otherwise every comparison below would hold trivially.
    for name in BLOCKS:
        x = inputs(name)[0]
        with torch.no_grad():
            assert (make_block(name)(x) - x).abs().max() > 1e-2, name


@pytest.mark.parametrize('name', BLOCKS)
def test_trace_holds_at_another_size(name):
    block, (x, other) = make_block(name), inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(block, x, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        for inp in (x, other):
            torch.testing.assert_close(loaded(inp), block(inp), rtol=1e-5,
                                       atol=1e-5)


@pytest.mark.parametrize('name', BLOCKS)
def test_onnx_torchscript_exporter_matches(name):
    pytest.importorskip('onnx')
    block, xs = make_block(name), inputs(name)
    assert_onnx_matches(block, export_torchscript(block, xs[0]), xs)


@pytest.mark.parametrize('name', [
    name if name in FAST_DYNAMO else pytest.param(
        name, marks=pytest.mark.slow) for name in BLOCKS
])
def test_onnx_dynamo_exporter_matches(name):
    pytest.importorskip('onnx')
    block, xs = make_block(name), inputs(name)
    assert_onnx_matches(block, export_dynamo(block, xs[0]), xs)


# a toy Mask R-CNN backbone with blocks


def toy_backbone():
    """The toy configs' ResNet-18 (1/4 width) with an NL and a DNL block
    between residual blocks and GC blocks inside the basic blocks."""
    cfg = dict(
        type='nonlocal_plugin.ResNetNL', depth=18, base_channels=16,
        init_cfg=None,
        between_blocks=[
            dict(cfg=dict(type='nonlocal_plugin.NonLocal2D',
                          zeros_init=False),
                 stages=(False, False, True, False), after=(-2, )),
            dict(cfg=dict(type='nonlocal_plugin.DisentangledNonLocal',
                          mode='concatenation', sub_sample=True,
                          zeros_init=False),
                 stages=(False, False, False, True), after=(0, )),
        ],
        plugins=[
            dict(cfg=dict(type='nonlocal_plugin.ContextBlock', ratio=1 / 4),
                 stages=(False, True, True, True), position='after_conv2')
        ])
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = DET_MODELS.build(cfg)
    backbone.eval()
    with torch.no_grad():
        for param in backbone.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    return backbone


BACKBONE_INPUTS = ((1, 3, 96, 256), (1, 3, 128, 160))


def backbone_inputs():
    return [torch.randn(*shape) for shape in BACKBONE_INPUTS]


class _Outputs(torch.nn.Module):
    """The backbone with named outputs for the TorchScript exporter."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)


def test_toy_backbone_traces():
    backbone, (x, other) = toy_backbone(), backbone_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(backbone, x, check_trace=False)
    with torch.no_grad():
        for inp in (x, other):
            for got, want in zip(traced(inp), backbone(inp)):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_toy_backbone_onnx_torchscript_exporter():
    pytest.importorskip('onnx')
    backbone, xs = toy_backbone(), backbone_inputs()
    buffer = io.BytesIO()
    outputs = [f'y{i}' for i in range(4)]
    spatial = {2: 'h', 3: 'w'}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(
            backbone, (xs[0], ), buffer, **torchscript_exporter_options(),
            opset_version=17,
            input_names=['x'], output_names=outputs,
            dynamic_axes={name: spatial for name in ['x', *outputs]})
    assert_onnx_matches(backbone, buffer.getvalue(), xs)


@pytest.mark.slow
def test_toy_backbone_onnx_dynamo_exporter():
    pytest.importorskip('onnx')
    backbone, xs = toy_backbone(), backbone_inputs()
    # Multiples of 32 keep every stride-2 stage exact, as a detector's
    # padded inputs are.
    assert_onnx_matches(backbone, export_dynamo(backbone, xs[0]), xs)


# TorchScript


@pytest.mark.parametrize('name', ['gc-att-add', 'gc-avg-mul-gate'])
def test_context_block_scripts(name):
    block, xs = make_block(name), inputs(name)
    scripted = torch.jit.script(block)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        for x in xs:
            torch.testing.assert_close(loaded(x), block(x), rtol=1e-6,
                                       atol=1e-6)


@pytest.mark.parametrize('block', [
    lambda: NonLocal2D(C),
    lambda: DisentangledNonLocal(C),
    lambda: torch.nn.Sequential(torch.nn.Conv2d(C, C, 1), NonLocal2D(C)),
])
def test_script_refuses_non_local_blocks_clearly(block):
    with pytest.raises(RuntimeError, match='does not support torch.jit.'
                       'script.*Use torch.jit.trace'):
        torch.jit.script(block())
