"""tools/test.py --show-dir and --out, through mmdet's and mmseg's hooks."""
import os
import pickle

import pytest
import torch

from nonlocal_plugin.apis import cli

CONFIGS = {
    'mmdet': 'configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py',
    'mmseg': 'configs/toy/fcn_r18-d8-nl_toy-cityscapes.py',
}


def _checkpoint(config, path):
    from nonlocal_plugin.analysis.models import build_model
    model, _ = build_model(config)
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('codebase', sorted(CONFIGS))
def test_show_dir_writes_prediction_images(codebase, tmp_path, capsys):
    config = CONFIGS[codebase]
    checkpoint = _checkpoint(config, tmp_path / 'model.pth')
    show_dir, out = tmp_path / 'show', tmp_path / 'results.pkl'
    cli.test_main([
        config, checkpoint, '--show-dir', str(show_dir), '--out', str(out),
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        'test_dataloader.dataset.indices=2', 'test_dataloader.batch_size=1'
    ])
    images = [
        os.path.join(root, f) for root, _, files in os.walk(show_dir)
        for f in files if f.endswith('.png')
    ]
    assert images and all(os.path.getsize(f) > 0 for f in images)
    assert f'prediction images written to {show_dir}' in capsys.readouterr(
    ).out
    with open(out, 'rb') as file:
        assert len(pickle.load(file)) == 2


def test_out_must_be_a_pickle(tmp_path):
    with pytest.raises(SystemExit, match='.pkl'):
        cli.test_main([
            CONFIGS['mmdet'],
            str(tmp_path / 'missing.pth'), '--out',
            str(tmp_path / 'results.json')
        ])
