"""Attention capture, GCNet's statistic and tools/analyze_attention.py."""
import itertools
import json
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from test_tools import ROOT
from torch import nn

from nonlocal_plugin import (
    ContextBlock,
    DisentangledNonLocal,
    DisentangledNonLocalDet2D,
    NonLocal2D,
)
from nonlocal_plugin.analysis import capture as capture_module
from nonlocal_plugin.analysis.capture import (
    AttentionCapture,
    grid_points,
    query_independence,
)
from nonlocal_plugin.ops.rows import (
    ROW_MODES,
    attention_rows,
    attention_rows_reference,
)

H, W = 4, 6


class _Tiny(nn.Module):

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def _planted_nl(channels=3):
    """An NL block whose queries and keys are its input: q_i . k_j = x_i . x_j
    (theta and phi are identity 1x1 convs, no scale)."""
    block = NonLocal2D(channels, reduction=1, use_scale=False).eval()
    for proj in (block.theta.conv, block.phi.conv):
        proj.weight.data = torch.eye(channels)[:, :, None, None].clone()
        proj.bias.data.zero_()
    return block


def _planted_input(channels=3):
    """Left, middle and right thirds carry one-hot codes of strength 3, plus
    a little fixed noise: a query attends to its own third."""
    rng = np.random.default_rng(0)
    x = 0.2 * rng.standard_normal((channels, H, W))
    for third in range(3):
        x[third, :, 2 * third:2 * third + 2] += 3.0
    return x


def _numpy_statistic(x, points):
    """GCNet's statistic from the planted input, with numpy loops only."""
    feats = x.reshape(x.shape[0], -1).T  # [N, C]
    maps, rows = [], []
    for px, py in points:
        i = int(py * H / H) * W + int(px * W / W)
        logits = feats @ feats[i]
        weights = np.exp(logits - logits.max())
        maps.append(weights / weights.sum())
        rows.append(feats[i])

    def mean_distance(vectors):
        pairs = list(itertools.combinations(vectors, 2))
        return sum(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
                   for a, b in pairs) / len(pairs)

    return mean_distance(maps), mean_distance(rows)


def test_statistic_on_a_planted_pattern():
    x = _planted_input()
    model = _Tiny(_planted_nl())
    points = grid_points((H, W), (2, 3))
    with AttentionCapture(model, points, (H, W)) as cap:
        model(torch.from_numpy(x)[None].float())
    maps = cap.maps['block']
    stats = query_independence(maps)
    expected_attention, expected_features = _numpy_statistic(x, points)
    assert stats.attention[0] == pytest.approx(expected_attention, abs=1e-5)
    assert stats.features[0] == pytest.approx(expected_features, abs=1e-5)
    # the planted pattern: far from query-independent
    assert stats.attention[0] > 0.4


@pytest.mark.parametrize('mode', ROW_MODES)
@pytest.mark.parametrize('num_keys', [24, 6])
def test_rows_match_their_reference_twin(mode, num_keys):
    torch.manual_seed(0)
    query, key = torch.randn(2, 24, 5), torch.randn(2, num_keys, 5)
    index = torch.tensor([0, 7, 23])
    weight = torch.randn(10)
    rows = attention_rows(query, key, index, mode=mode, scale=0.3,
                          concat_weight=weight)
    twin = attention_rows_reference(query, key, index, mode=mode, scale=0.3,
                                    concat_weight=weight)
    assert rows.shape == (2, 3, num_keys)
    torch.testing.assert_close(rows, twin, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('block', [
    NonLocal2D(8, zeros_init=False),
    NonLocal2D(8, zeros_init=False, sub_sample=True, mode='concatenation'),
    DisentangledNonLocal(8, zeros_init=False),
    DisentangledNonLocal(8, zeros_init=False, sub_sample=True),
])
def test_captured_rows_are_what_the_block_applies(block):
    """Query rows @ value == the block's own context at those queries."""
    block.eval()
    x = torch.randn(2, 8, H, W)
    points = grid_points((H, W), (2, 2))
    with AttentionCapture(_Tiny(block), points, (H, W)) as cap:
        block(x)
    maps = cap.maps['block']
    query, key, value = block.embed(x)
    context = block.aggregate(x, query, key, value)  # [B, N, C']
    expected = context[:, maps.index]
    torch.testing.assert_close(maps.query_rows() @ value.float(), expected,
                               rtol=1e-4, atol=1e-5)
    if isinstance(block, DisentangledNonLocal):
        assert maps.pairwise is not None and maps.unary is not None


@pytest.mark.parametrize('options', [
    dict(), dict(whitening='bn', learn_temperature=True),
    dict(unary_type='mean', sub_sample=True), dict(use_unary=False),
    dict(use_pairwise=False)
], ids=str)
def test_captured_dnl_det_parts_are_what_the_block_applies(options):
    """The detection DNL block: pairwise rows @ value == its pairwise
    term at the queries, unary map @ value == its unary term."""
    block = DisentangledNonLocalDet2D(8, std=0.3, **options).eval()
    x = torch.randn(2, 8, H, W)
    points = grid_points((H, W), (2, 2))
    with AttentionCapture(_Tiny(block), points, (H, W)) as cap:
        block(x)
    maps = cap.maps['block']
    assert maps.kind == 'dnl'
    source = x if block.downsample is None else block.downsample(x)
    assert maps.key_grid == tuple(source.shape[2:])
    query, key, value = block.embed(x, source)
    if block.use_pairwise:
        expected = block.pairwise(query, key, value)[:, maps.index]
        torch.testing.assert_close(maps.pairwise @ value, expected,
                                   rtol=1e-4, atol=1e-5)
    else:
        assert maps.pairwise is None
    if block.use_unary:
        expected = block.unary(source, query, key, value)  # [B, C]
        torch.testing.assert_close(
            (maps.unary[:, None] @ value)[:, 0], expected, rtol=1e-4,
            atol=1e-5)
    else:
        assert maps.unary is None


def test_gc_map_is_one_map():
    block = ContextBlock(8, 1 / 4).eval()
    x = torch.randn(1, 8, H, W)
    with AttentionCapture(block, grid_points((H, W)), (H, W)) as cap:
        block(x)
    maps = cap.maps['']
    expected = block.conv_mask(x).flatten(1).softmax(-1)
    torch.testing.assert_close(maps.unary, expected)
    assert query_independence(maps).attention[0] == pytest.approx(0, abs=1e-9)


def test_capture_off_does_no_extra_work(monkeypatch):
    block = NonLocal2D(8).eval()
    model = _Tiny(block)
    calls = dict(embed=0, rows=0)
    embed, rows = block.embed, capture_module.attention_rows

    def counting_embed(*args):
        calls['embed'] += 1
        return embed(*args)

    def counting_rows(*args, **kwargs):
        calls['rows'] += 1
        return rows(*args, **kwargs)

    monkeypatch.setattr(block, 'embed', counting_embed)
    monkeypatch.setattr(capture_module, 'attention_rows', counting_rows)
    x = torch.randn(1, 8, H, W)
    capture = AttentionCapture(model, grid_points((H, W)), (H, W))
    model(x)
    assert calls == dict(embed=1, rows=0)
    with capture:
        model(x)
    assert calls == dict(embed=3, rows=1)
    model(x)
    assert calls == dict(embed=4, rows=1)
    assert not block._forward_hooks and not block._forward_pre_hooks


def test_bad_queries_are_refused():
    with pytest.raises(ValueError, match='--queries'):
        capture_module.grid_index([(10.0, 1.0)], (H, W), (H, W))
    with pytest.raises(ValueError, match='--grid'):
        grid_points((H, W), (1, 1))
    from nonlocal_plugin.analysis.attention_report import parse_points
    with pytest.raises(ValueError, match='x,y'):
        parse_points(['3;4'])


@pytest.mark.parametrize('config', [
    'configs/toy/mask-rcnn_r18-dnl-c4_fpn_toy-coco.py',
    'configs/toy/fcn_r18-d8-nl_toy-cityscapes.py',
])
def test_tool_writes_overlays_and_statistics(config, tmp_path, capsys):
    from nonlocal_plugin.analysis.cli import attention_main
    from nonlocal_plugin.analysis.models import build_model
    model, _ = build_model(config)
    checkpoint = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    image = str(tmp_path / 'toy.png')
    rng = np.random.default_rng(0)
    mmcv.imwrite(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), image)
    out = tmp_path / 'out'
    attention_main([config, checkpoint, image, '--queries', '10,10',
                    '80,50', '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'mean cosine distance' in printed
    assert (out / 'toy_attention.png').stat().st_size > 1000
    stats = json.loads((out / 'statistics.json').read_text())
    assert stats['blocks'] and 'cosine' in stats['definition']
    block = stats['blocks'][0]
    assert 0 <= block['attention'] <= 1 and 0 <= block['features'] <= 2


def test_marker_cells_and_shares_on_a_planted_image():
    from nonlocal_plugin.analysis.markers import _marker_cells, _shares
    from nonlocal_plugin.datasets.toy import CUE_COLOURS
    rgb = np.full((32, 64, 3), 100, dtype=np.uint8)
    rgb[0:16, 48:64] = CUE_COLOURS['green']  # key cell (0, 3) of 2 x 4
    masks = _marker_cells(rgb, (32, 64), (2, 4), min_cover=0.5)
    assert [m.nonzero().flatten().tolist() for m in masks] == [[], [3], []]
    row = torch.full((8, ), 1 / 8)
    mass, own = _shares(row, masks, own=1)
    assert mass == pytest.approx(1 / 8) and own == pytest.approx(1.0)
    assert _shares(row, masks, own=0)[1] == 0.0


def test_marker_attention_runs_on_a_toy_model(tmp_path):
    from nonlocal_plugin.ablation.grid import load_grid, row_config_text
    from nonlocal_plugin.analysis.markers import marker_attention
    from nonlocal_plugin.datasets import ensure_toy_dataset
    root = str(tmp_path / 'matching')
    ensure_toy_dataset('coco_matching', root, seed=0, num_train=1,
                       num_val=3, img_size=(96, 256))
    grid = load_grid(osp.join(ROOT, 'configs', 'ablations',
                              'toy-coco_two-tasks.py'))
    config = tmp_path / 'dnl.py'
    config.write_text(row_config_text(grid.row('matching-dnl')))
    found = marker_attention(str(config), None, root)
    (name, record), = found.items()
    with open(osp.join(root, 'annotations', 'instances_val2017.json')) as f:
        objects = len(json.load(f)['annotations'])
    assert record['kind'] == 'dnl' and record['objects'] == objects
    for part in ('pairwise', 'unary'):
        assert 0 <= record[part]['mass'] <= 1
        assert 0 <= record[part]['own'] <= 1
