"""The ablation options of GCNet (arXiv 1904.11492, Table 2) and of the DNL
detection block (arXiv 2006.06668; the authors' ``mmdet/ops/nl_gc_block.py``)
against plain-torch fp64 references written from their equations."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ContextBlock as MmcvContextBlock
from mmengine.registry import DefaultScope

import nonlocal_plugin
from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocalDet2D,
    SimplifiedNonLocal2D,
)
from nonlocal_plugin.blocks.dnl_detection import WHITENINGS

SHAPE = (2, 16, 5, 6)
FP64 = dict(rtol=1e-10, atol=1e-12)


def _randomise(module, std=0.1):
    """Every parameter and running statistic away from its init."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == 'log_temperature':
                p.fill_(math.log(0.07))
            else:
                p.normal_(0, std)
        for name, buf in module.named_buffers():
            if name.endswith('running_mean'):
                buf.normal_(0, 0.1)
            elif name.endswith('running_var'):
                buf.uniform_(0.5, 1.5)
    return module


def _x(dtype=torch.float64, shape=SHAPE):
    return torch.randn(shape, dtype=dtype)


# GCNet: the transform's ablation rows

# (ratio, use_layer_norm, use_relu): "w/o ratio", "r4", "r4+ReLU",
# "r4+LN+ReLU" (mmcv's block) and LN alone.
GC_ROWS = {
    'no-ratio': (None, None, None),
    'r4': (1 / 4, False, False),
    'r4-relu': (1 / 4, False, True),
    'r4-ln-relu': (1 / 4, True, True),
    'r4-ln': (1 / 4, True, False),
}
GC_FUSIONS = [('channel_add', ), ('channel_mul', ),
              ('channel_gate', 'channel_add')]


def _gc_reference(sd, x, pooling, fusions, ratio, layer_norm, relu):
    """GCNet: ``x (*) F(pool(x))`` from the state dict's tensors."""
    n, c = x.shape[:2]
    flat = x.flatten(2)  # [N, C, HW]
    if pooling == 'att':
        logits = torch.einsum('c,ncp->np', sd['conv_mask.weight'].flatten(),
                              flat) + sd['conv_mask.bias']  # [N, HW]
        context = torch.einsum('ncp,np->nc', flat, logits.softmax(-1))
    else:
        context = flat.mean(-1)  # [N, C]

    def transform(prefix):
        w0, b0 = sd[f'{prefix}.0.weight'], sd[f'{prefix}.0.bias']
        t = context @ w0.flatten(1).T + b0  # [N, planes or C]
        if ratio is None:
            return t
        if layer_norm:
            mean = t.mean(-1, keepdim=True)
            var = t.var(-1, unbiased=False, keepdim=True)
            t = ((t - mean) / torch.sqrt(var + 1e-5) *
                 sd[f'{prefix}.1.weight'].flatten() +
                 sd[f'{prefix}.1.bias'].flatten())
        if relu:
            t = t.clamp_min(0)
        w3, b3 = sd[f'{prefix}.3.weight'], sd[f'{prefix}.3.bias']
        return t @ w3.flatten(1).T + b3  # [N, C]

    out = x  # mmcv's order: products first, then the sum
    if 'channel_mul' in fusions:
        out = out * transform('channel_mul_conv').sigmoid()[:, :, None, None]
    if 'channel_gate' in fusions:
        out = out * 2 * transform('channel_gate_conv').sigmoid()[..., None,
                                                                 None]
    if 'channel_add' in fusions:
        out = out + transform('channel_add_conv')[:, :, None, None]
    return out


@pytest.mark.parametrize('pooling', ['att', 'avg'])
@pytest.mark.parametrize('fusions', GC_FUSIONS, ids='+'.join)
@pytest.mark.parametrize('row', GC_ROWS)
def test_context_block_rows_match_reference(row, fusions, pooling):
    ratio, layer_norm, relu = GC_ROWS[row]
    block = _randomise(
        ContextBlock(16, ratio, pooling, fusions, use_layer_norm=layer_norm,
                     use_relu=relu)).double()
    x = _x()
    expected = _gc_reference(block.state_dict(), x, pooling, fusions, ratio,
                             bool(layer_norm), relu is not False)
    torch.testing.assert_close(block(x), expected, **FP64)


@pytest.mark.parametrize('row', GC_ROWS)
def test_context_block_row_state_dict(row):
    ratio, layer_norm, relu = GC_ROWS[row]
    block = ContextBlock(16, ratio, use_layer_norm=layer_norm, use_relu=relu)
    layers = {k.rsplit('.', 1)[0] for k in block.state_dict()}
    # mmcv's indices: conv 0, LayerNorm 1, conv 3; "w/o ratio": conv 0.
    assert layers == {'conv_mask', 'channel_add_conv.0'} | {
        f'channel_add_conv.{i}' for i, kept in ((1, layer_norm),
                                                (3, ratio)) if kept}
    assert block.planes == (None if ratio is None else 4)


@pytest.mark.parametrize('explicit', [False, True])
@pytest.mark.parametrize('pooling', ['att', 'avg'])
@pytest.mark.parametrize('fusions', [('channel_add', ), ('channel_mul', ),
                                     ('channel_add', 'channel_mul')],
                         ids='+'.join)
def test_context_block_still_matches_mmcv(fusions, pooling, explicit):
    peer = _randomise(MmcvContextBlock(16, 1 / 4, pooling, fusions))
    options = dict(use_layer_norm=True, use_relu=True) if explicit else {}
    ours = ContextBlock(16, 1 / 4, pooling, fusions, **options)
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = _x(torch.float32)
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('fusions', [('channel_add', ), ('channel_gate', )],
                         ids='+'.join)
@pytest.mark.parametrize('row', GC_ROWS)
def test_context_block_rows_start_as_identity(row, fusions):
    ratio, layer_norm, relu = GC_ROWS[row]
    block = ContextBlock(16, ratio, 'att', fusions,
                         use_layer_norm=layer_norm, use_relu=relu)
    x = _x(torch.float32)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize('row', GC_ROWS)
def test_context_block_rows_pass_gradients(row):
    ratio, layer_norm, relu = GC_ROWS[row]
    block = _randomise(
        ContextBlock(16, ratio, 'att', ('channel_add', 'channel_mul'),
                     use_layer_norm=layer_norm, use_relu=relu),
        std=0.5).double()
    with torch.no_grad():  # a zero-mean LayerNorm output leaves a ReLU live
        for name, p in block.named_parameters():
            if '.1.' in name:
                p.fill_(1.0 if name.endswith('weight') else 0.0)
    block(_x()).square().sum().backward()
    for name, p in block.named_parameters():
        # A softmax over positions ignores the mask's bias.
        if name == 'conv_mask.bias':
            assert p.grad.abs().max() < 1e-12
        else:
            assert p.grad.abs().max() > 1e-6, name


def test_simplified_non_local_is_snl():
    """SNL: ``x_i + sum_j softmax_j(w_k . x_j) (W_v x_j + b_v)``, with the
    value conv before the pooling, as the DNL authors write it."""
    block = _randomise(SimplifiedNonLocal2D(16)).double()
    assert block.planes is None and block.fusion_types == ('channel_add', )
    sd = block.state_dict()
    assert set(sd) == {'conv_mask.weight', 'conv_mask.bias',
                       'channel_add_conv.0.weight', 'channel_add_conv.0.bias'}
    x = _x()
    value = F.conv2d(x, sd['channel_add_conv.0.weight'],
                     sd['channel_add_conv.0.bias']).flatten(2)  # [N, C, HW]
    mask = F.conv2d(x, sd['conv_mask.weight'],
                    sd['conv_mask.bias']).flatten(2).softmax(-1)  # [N, 1, HW]
    expected = x + torch.bmm(value, mask.transpose(1, 2)).unsqueeze(-1)
    torch.testing.assert_close(block(x), expected, **FP64)
    twin = ContextBlock(16, ratio=None).double()
    twin.load_state_dict(sd, strict=True)
    torch.testing.assert_close(twin(x), block(x), rtol=0, atol=0)
    fresh = SimplifiedNonLocal2D(16)
    x = _x(torch.float32)
    assert torch.equal(fresh(x), x)


def test_simplified_non_local_as_the_dnl_authors_build_it():
    """``bias=False, std=0.01``: ``x_i + sum_j softmax_j(w_k . x_j) W_v
    x_j``, no value bias, ``W_v ~ N(0, 0.01^2)`` (their ``simple=True``)."""
    torch.manual_seed(0)
    block = SimplifiedNonLocal2D(256, bias=False, std=0.01)
    sd = block.state_dict()
    assert 'channel_add_conv.0.bias' not in sd
    weight = sd['channel_add_conv.0.weight']
    assert abs(weight.std().item() - 0.01) < 0.0005  # 65536 draws
    assert abs(weight.mean().item()) < 0.0005
    block = _randomise(block).double()
    sd = block.state_dict()
    x = torch.randn(2, 256, 5, 6, dtype=torch.float64)
    value = F.conv2d(x, sd['channel_add_conv.0.weight']).flatten(2)
    mask = F.conv2d(x, sd['conv_mask.weight'],
                    sd['conv_mask.bias']).flatten(2).softmax(-1)
    expected = x + torch.bmm(value, mask.transpose(1, 2)).unsqueeze(-1)
    torch.testing.assert_close(block(x), expected, **FP64)
    # init_weights (what a backbone's init calls) keeps the normal init
    block.init_weights()
    assert block.channel_add_conv[0].weight.abs().max() > 0


@pytest.mark.parametrize('name', ['SimplifiedNonLocal2D',
                                  'DisentangledNonLocalDet2D'])
def test_new_blocks_are_registered(name):
    with DefaultScope.overwrite_default_scope('nonlocal_plugin'):
        block = nonlocal_plugin.MODELS.build(
            dict(type=f'nonlocal_plugin.{name}', in_channels=8))
    assert type(block).__name__ == name


# DNL detection block


def _conv_rows(sd, name, x):
    """A 1x1 conv from the state dict, as ``[N, C_out, L]``."""
    return F.conv2d(x, sd[f'{name}.weight'],
                    sd.get(f'{name}.bias')).flatten(2)


def _bn(sd, name, t, training):
    """BatchNorm1d of ``[N, C', L]``: per channel over N and L."""
    if training:
        mean = t.mean(dim=(0, 2), keepdim=True)
        var = t.var(dim=(0, 2), unbiased=False, keepdim=True)
    else:
        mean = sd[f'{name}.running_mean'][:, None]
        var = sd[f'{name}.running_var'][:, None]
    t = (t - mean) / torch.sqrt(var + 1e-5)
    if f'{name}.weight' in sd:
        t = t * sd[f'{name}.weight'][:, None] + sd[f'{name}.bias'][:, None]
    return t


def _dnl_reference(block, x):
    """``NonLocal2dGc.forward`` of the official file, in its layout
    (``[N, C, L]``), with the unary ``'mean'`` logits of the paper."""
    sd = {**dict(block.named_parameters()), **dict(block.named_buffers())}
    source = F.max_pool2d(x, 2, 2) if block.sub_sample else x
    planes = block.planes
    value = _conv_rows(sd, 'conv_value', source)  # [N, C, M]
    out = x
    if block.use_pairwise or block.unary_type == 'mean':
        query = _conv_rows(sd, 'conv_query', x)  # [N, C', HW]
        key = _conv_rows(sd, 'conv_key', source)  # [N, C', M]
    if block.use_pairwise:
        q, k = query, key
        if block.whitening == 'channel':
            q, k = q - q.mean(2, keepdim=True), k - k.mean(2, keepdim=True)
        elif block.whitening == 'spatial':
            q, k = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
        elif block.whitening != 'none':
            suffix = '_affine' if block.whitening == 'bn_affine' else ''
            q = _bn(sd, f'query_bn{suffix}', q, block.training)
            k = _bn(sd, f'key_bn{suffix}', k, block.training)
        temperature = (sd['log_temperature'].exp()
                       if block.learn_temperature else block.temperature)
        sim = torch.bmm(q.transpose(1, 2), k) / math.sqrt(planes)
        sim = (sim / temperature).softmax(2)  # [N, HW, M]
        pair = torch.bmm(sim, value.transpose(1, 2)).transpose(1, 2)
        out = out + sd['gamma'] * pair.reshape(x.shape)
    if block.use_unary:
        if block.unary_type == 'conv':
            mask = _conv_rows(sd, 'conv_mask', source)  # [N, 1, M]
        else:
            mask = torch.bmm(query.mean(2, keepdim=True).transpose(1, 2),
                             key)  # [N, 1, M]
        unary = torch.bmm(value, mask.softmax(2).transpose(1, 2))  # [N, C, 1]
        out = out + unary.unsqueeze(-1)
    return out


def _dnl_cases():
    for whitening in WHITENINGS:
        for unary_type in ('conv', 'mean'):
            yield pytest.param(dict(whitening=whitening,
                                    unary_type=unary_type),
                               id=f'{whitening}-{unary_type}')
        yield pytest.param(dict(whitening=whitening, use_unary=False),
                           id=f'{whitening}-pairwise-only')
    for unary_type in ('conv', 'mean'):
        yield pytest.param(dict(use_pairwise=False, unary_type=unary_type),
                           id=f'unary-only-{unary_type}')
    for learn in (False, True):
        for sub_sample in (False, True):
            for impl in ('reference', 'fused'):
                yield pytest.param(
                    dict(learn_temperature=learn, sub_sample=sub_sample,
                         attn_impl=impl),
                    id=f'learnT{int(learn)}-ss{int(sub_sample)}-{impl}')


DNL_CASES = list(_dnl_cases())


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('options', DNL_CASES)
def test_dnl_det_matches_reference(options, training):
    block = _randomise(DisentangledNonLocalDet2D(16, **options)).double()
    block.train(training)
    x = _x(shape=(2, 16, 6, 8))
    expected = _dnl_reference(block, x)
    torch.testing.assert_close(block(x), expected, **FP64)


def test_dnl_det_defaults_and_init_are_the_official_ones():
    block = DisentangledNonLocalDet2D(64, learn_temperature=True)
    assert (block.planes, block.whitening) == (16, 'channel')
    assert block.conv_value.bias is None and not hasattr(block, 'conv_out')
    assert set(block.state_dict()) == {
        'gamma', 'log_temperature', 'conv_query.weight', 'conv_query.bias',
        'conv_key.weight', 'conv_key.bias', 'conv_value.weight',
        'conv_mask.weight', 'conv_mask.bias'
    }
    # As after a backbone's init, which init_weights must undo.
    _randomise(block)
    torch.nn.init.kaiming_normal_(block.conv_value.weight)
    block.init_weights()
    assert block.gamma.item() == 0
    assert block.current_temperature().item() == pytest.approx(0.05)
    for conv in (block.conv_query, block.conv_key, block.conv_value,
                 block.conv_mask):  # the official normal(0, 0.01) init
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert block.conv_query.bias.abs().max() == 0


def _zero_grads(block):
    """Parameters whose gradient is zero in exact arithmetic.

    A shift of every logit of a softmax row by one value changes nothing:
    the mask bias; the key bias, which adds ``q_i . b`` to row ``i`` under
    any whitening (and ``mean(q) . b`` to the unary logits); the affine
    bias of the key batch norm, likewise. The query bias is removed by
    whitening over positions and by a batch norm in training.
    """
    zero = {'conv_mask.bias', 'conv_key.bias', 'key_bn_affine.bias'}
    removes_query_bias = block.whitening == 'channel' or (
        block.whitening in ('bn', 'bn_affine') and block.training)
    if removes_query_bias and not (block.use_unary
                                   and block.unary_type == 'mean'):
        zero.add('conv_query.bias')
    return zero & {name for name, _ in block.named_parameters()}


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('options', DNL_CASES)
def test_dnl_det_gradients_reach_every_parameter(options, training):
    # _randomise makes the zero-init gate non-zero. A milder temperature
    # keeps the softmax off saturation, where gradients would underflow.
    options = dict(dict(temperature=0.5), **options)
    block = _randomise(DisentangledNonLocalDet2D(16, **options)).double()
    block.train(training)
    x = _x(shape=(2, 16, 6, 8)).requires_grad_()
    block(x).square().sum().backward()
    zero = _zero_grads(block)
    scale = max(p.grad.abs().max() for p in block.parameters())
    for name, p in block.named_parameters():
        size = p.grad.abs().max() / scale
        assert (size < 1e-10) if name in zero else (size > 1e-8), name
    assert x.grad.abs().max() > 0


def test_dnl_det_init_gates_off_the_pairwise_term_only():
    """The official init: ``gamma = 0``, so only the unary term, one vector
    per image, is added; it is not zero, so the block is not the identity.
    """
    block = DisentangledNonLocalDet2D(16)
    x = _x(torch.float32)
    delta = block(x) - x
    assert delta.abs().max() > 1e-4  # the unary term
    # Constant over positions, up to the rounding of (x + u) - x.
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize('options', [
    dict(use_unary=False),
    dict(zeros_init=True),
    dict(zeros_init=True, unary_type='mean'),
    dict(zeros_init=True, use_pairwise=False),
])
def test_dnl_det_identity_at_init_where_claimed(options):
    block = DisentangledNonLocalDet2D(16, **options)
    x = _x(torch.float32)
    assert torch.equal(block(x), x)


def test_dnl_det_unary_only_is_snl_without_value_bias():
    snl = _randomise(SimplifiedNonLocal2D(16)).double()
    with torch.no_grad():
        snl.channel_add_conv[0].bias.zero_()
    dnl = DisentangledNonLocalDet2D(16, use_pairwise=False).double()
    dnl.load_state_dict({
        'conv_value.weight': snl.channel_add_conv[0].weight,
        'conv_mask.weight': snl.conv_mask.weight,
        'conv_mask.bias': snl.conv_mask.bias
    }, strict=True)
    x = _x()
    torch.testing.assert_close(dnl(x), snl(x), **FP64)


GC, DNL = ContextBlock, DisentangledNonLocalDet2D
BAD = [
    (GC, dict(ratio='1/16'), TypeError, 'ratio must be a positive number or '
     'None'),
    (GC, dict(ratio=-0.5), ValueError, 'ratio'),
    (GC, dict(ratio=None, use_layer_norm=True), ValueError,
     'use_layer_norm=True needs a bottleneck.*None or False'),
    (GC, dict(ratio=None, use_relu=True), ValueError, 'use_relu=True'),
    (GC, dict(use_layer_norm='yes'), TypeError,
     'use_layer_norm must be a bool or None'),
    (GC, dict(use_relu=1), TypeError, 'use_relu must be a bool or None'),
    (DNL, dict(whitening='batch_norm'), ValueError,
     r"whitening must be one of \('none', 'channel', 'spatial', 'bn', "
     r"'bn_affine'\)"),
    (DNL, dict(unary_type='avg'), ValueError,
     r"unary_type must be one of \('conv', 'mean'\)"),
    (DNL, dict(use_pairwise=False, use_unary=False), ValueError, 'use_unary'),
    (DNL, dict(temperature=0), ValueError, 'temperature'),
    (DNL, dict(temperature='0.05'), TypeError, 'temperature'),
    (DNL, dict(learn_temperature='yes'), TypeError, 'learn_temperature'),
    (DNL, dict(reduction=32), ValueError, 'reduction'),
    (DNL, dict(reduction=0.25), TypeError, 'reduction'),
    (DNL, dict(attn_impl='flash'), ValueError, 'attn_impl'),
    (DNL, dict(sub_sample=1), TypeError, 'sub_sample'),
    (DNL, dict(std=-1), ValueError, 'std'),
    (SimplifiedNonLocal2D, dict(std=0), ValueError, 'std'),
    (SimplifiedNonLocal2D, dict(bias=1), TypeError, 'bias'),
]


@pytest.mark.parametrize('cls,kwargs,error,match', BAD)
def test_bad_options_raise(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(16, **kwargs)


def test_new_options_are_keyword_only_and_inputs_checked():
    with pytest.raises(TypeError):
        ContextBlock(16, 0.25, 'att', ('channel_add', ), True)
    with pytest.raises(TypeError):
        DisentangledNonLocalDet2D(16, 4)
    with pytest.raises(ValueError, match='in_channels=16'):
        DisentangledNonLocalDet2D(16)(torch.randn(1, 8, 4, 4))
