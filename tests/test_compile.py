"""torch.compile: every block compiles as one graph (``fullgraph=True``),
the compiled softmax modes still run a fused kernel (never the ``N x M``
map), and inductor's code equals eager forward and backward.

Inductor takes seconds per block on a CPU, so the default suite compiles one
block per family and the slow suite every block in every mode.
"""
import pytest
import torch

from nonlocal_plugin import ContextBlock, DisentangledNonLocal, NonLocal2D
from nonlocal_plugin.blocks.non_local import MODES

torch_dynamo = pytest.importorskip('torch._dynamo')
# The blocks switch paths under torch.compiler.is_compiling() (torch 2.3+);
# older dynamo breaks the graph at that switch (the blocks still compile).
pytestmark = pytest.mark.skipif(
    not hasattr(torch.compiler, 'is_compiling'),
    reason=f'torch {torch.__version__} has no torch.compiler.is_compiling')

C = 8
BLOCKS = {
    **{
        f'nl-{mode}{"-sub" if sub else ""}':
        (lambda mode=mode, sub=sub: NonLocal2D(
            C, sub_sample=sub, mode=mode, zeros_init=False))
        for mode in MODES for sub in (False, True)
    },
    **{
        f'dnl-{mode}': (lambda mode=mode: DisentangledNonLocal(
            C, mode=mode, zeros_init=False))
        for mode in MODES
    },
    'dnl-unary-only': lambda: DisentangledNonLocal(
        C, use_pairwise=False, zeros_init=False),
    'gc-att-add-mul': lambda: ContextBlock(
        C, ratio=1 / 4, fusion_types=('channel_add', 'channel_mul')),
    'gc-avg-gate': lambda: ContextBlock(
        C, ratio=1 / 4, pooling_type='avg', fusion_types=('channel_gate', )),
}
# One per family, compiled together in the default suite.
FAMILIES = ('nl-embedded_gaussian', 'dnl-concatenation', 'gc-att-add-mul')
SHAPES = ((2, C, 6, 10), (2, C, 10, 4))


def make_block(name):
    block = BLOCKS[name]()
    with torch.no_grad():  # away from the init (GC's last convs are zero)
        for param in block.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return block


def forward_backward(module, params, x):
    x = x.detach().requires_grad_()
    out = module(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *params])
    return out, grads


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch_dynamo.reset()
    yield
    torch_dynamo.reset()


@pytest.mark.parametrize('name, grad', [(name, True) for name in BLOCKS] +
                         [(name, False) for name in FAMILIES],
                         ids=[*BLOCKS, *(f'{n}-no_grad' for n in FAMILIES)])
def test_every_block_compiles_as_one_graph(name, grad):
    # backend='eager' runs dynamo alone: any graph break raises.
    block = make_block(name)
    compiled = torch.compile(block, fullgraph=True, backend='eager')
    with torch.set_grad_enabled(grad):
        for shape in SHAPES:
            x = torch.randn(*shape)
            torch.testing.assert_close(compiled(x), block(x))


@pytest.mark.parametrize('name', ['nl-gaussian', 'nl-embedded_gaussian-sub',
                                  'dnl-embedded_gaussian'])
def test_compiled_softmax_modes_never_build_the_map(name):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    block = make_block(name)
    compiled = torch.compile(
        block, fullgraph=True,
        backend=aot_autograd(fw_compiler=record, bw_compiler=record))
    x = torch.randn(*SHAPES[0], requires_grad=True)
    compiled(x).sum().backward()
    assert len(graphs) == 2  # forward, backward
    for gm in graphs:
        targets = [str(node.target) for node in gm.graph.nodes]
        assert any('scaled_dot_product_flash_attention' in t
                   for t in targets), targets
        for node in gm.graph.nodes:
            # Only DNL's unary term has a softmax: over [B, M] logits.
            if 'softmax' in str(node.target):
                assert node.args[0].meta['val'].dim() == 2, node.format_node()


def assert_inductor_matches_eager(block):
    params = list(block.parameters())
    # One static shape: each compile (forward and backward) costs seconds.
    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    x = torch.randn(*SHAPES[0])
    want, want_grads = forward_backward(block, params, x)
    got, got_grads = forward_backward(compiled, params, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Gradients in the scale of the largest one: some are zero in exact
    # arithmetic (a softmax is shift invariant) and get rounding noise.
    scale = max(g.abs().max().item() for g in want_grads)
    for g, w in zip(got_grads, want_grads):
        assert (g - w).abs().max().item() <= 1e-5 * scale


def test_inductor_matches_eager_one_block_per_family():
    # One compile of NL, DNL and GC in a row: a cold inductor compile costs
    # about 20 s on 2 CPU cores.
    assert_inductor_matches_eager(
        torch.nn.Sequential(*(make_block(name) for name in FAMILIES)))


@pytest.mark.slow
@pytest.mark.parametrize('name', BLOCKS)
def test_inductor_matches_eager(name):
    assert_inductor_matches_eager(make_block(name))
