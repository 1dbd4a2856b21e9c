"""Bad data and bad configs end in one ``error:`` line naming the file or
option and what to do, before the Runner is built and before any training.

Most cases call the tools' entry points in this process (the message is the
``SystemExit`` that ``python tools/train.py`` prints as its only output
line); ``test_bad_type_is_one_line_from_the_tool`` runs the tool itself.
"""
import json
import os
import os.path as osp
import sys

import cv2
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from test_tools import ROOT, TOOLS, TOY_DET, TOY_SEG, one_error, run_tool

from nonlocal_plugin.apis import cli

SMALL = ('toy_dataset.num_train=6', 'toy_dataset.num_val=3')
COCO = 'data/toy_coco'
CITYSCAPES = 'data/toy_cityscapes'
TRAIN_JSON = f'{COCO}/annotations/instances_train2017.json'

# helper functions


def error_line(main, args):
    """The one line ``main`` exits with (``python tools/...`` prints it
    alone on stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    message = info.value.code
    assert isinstance(message, str) and message.startswith('error: ')
    assert '\n' not in message
    return message


def train_line(config, *options):
    return error_line(cli.train_main, [config, '--cfg-options', *SMALL,
                                   *options])


@pytest.fixture
def toy_coco(tmp_path, monkeypatch):
    """A toy COCO dataset in ``data/`` of a fresh working dir."""
    monkeypatch.chdir(tmp_path)
    from nonlocal_plugin.datasets import ensure_toy_dataset
    ensure_toy_dataset('coco', COCO, seed=0, num_train=6, num_val=3,
                       img_size=(96, 256))
    return tmp_path


def edit_json(path, edit):
    with open(path) as f:
        coco = json.load(f)
    edit(coco)
    with open(path, 'w') as f:
        json.dump(coco, f)


def write_config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(f'_base_ = [{TOY_DET!r}]\n{text}')
    return str(path)


# data


def test_truncated_coco_json(toy_coco):
    with open(TRAIN_JSON, 'rb') as f:
        data = f.read()
    with open(TRAIN_JSON, 'wb') as f:
        f.write(data[:len(data) // 2])
    line = train_line(TOY_DET)
    assert TRAIN_JSON in line and 'not valid JSON' in line
    assert 'truncated' in line and 'train_dataloader.dataset.ann_file' in line


def test_coco_json_without_images(toy_coco):
    edit_json(TRAIN_JSON, lambda coco: coco.pop('images'))
    line = train_line(TOY_DET)
    assert TRAIN_JSON in line and "['images']" in line


def test_coco_annotation_of_an_unknown_image(toy_coco):
    def orphan(coco):
        coco['annotations'][0]['image_id'] = 999
    edit_json(TRAIN_JSON, orphan)
    line = train_line(TOY_DET)
    assert '1 of ' in line and 'image_id 999' in line and TRAIN_JSON in line


def test_listed_image_missing(toy_coco):
    with open(TRAIN_JSON) as f:
        name = json.load(f)['images'][2]['file_name']
    os.remove(osp.join(COCO, 'train2017', name))
    line = train_line(TOY_DET)
    assert f"1 of the 6 images listed in '{TRAIN_JSON}'" in line
    assert name in line and 'data_prefix.img' in line


def test_cityscapes_label_of_another_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from nonlocal_plugin.datasets import ensure_toy_dataset
    ensure_toy_dataset('cityscapes', CITYSCAPES, seed=0, num_train=4,
                       num_val=2, img_size=(128, 256))
    label = sorted(
        p for p in (tmp_path / CITYSCAPES / 'gtFine' / 'train').rglob(
            '*_labelTrainIds.png'))[1]
    image = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(label), cv2.resize(image, (128, 64)))
    line = error_line(cli.train_main, [
        TOY_SEG, '--cfg-options', 'toy_dataset.num_train=4',
        'toy_dataset.num_val=2'
    ])
    assert '1 of the 4 label maps of train_dataloader.dataset' in line
    assert f'{label.name} is 128x64' in line and '256x128' in line


# model config


def test_stages_of_the_wrong_length(toy_coco):
    config = write_config(
        toy_coco, 'stages.py',
        'model = dict(backbone=dict(between_blocks=[dict(cfg=dict(type='
        "'nonlocal_plugin.NonLocal2D'), stages=(False, True), after=(0, ))"
        ']))\n')
    line = train_line(config)
    assert "between_blocks[0]['stages'] must have one bool per stage" in line


def test_misspelled_block_type(toy_coco):
    config = write_config(
        toy_coco, 'typo.py',
        'model = dict(backbone=dict(between_blocks=[dict(cfg=dict(type='
        "'nonlocal_plugin.NonLocal2DD'), stages=(False, False, True, False),"
        ' after=(-2, ))]))\n')
    line = train_line(config)
    assert "'nonlocal_plugin.NonLocal2DD'" in line and 'None' not in line
    # Close matches from this package's scope and from mmcv's.
    assert "'nonlocal_plugin.NonLocal2D'" in line and "'NonLocal2d'" in line


def test_misspelled_type_in_mmdets_own_plugins(toy_coco):
    # A ResNet-50's Bottleneck builds plugins through mmcv, whose message
    # would be "Cannot find None in registry".
    config = write_config(
        toy_coco, 'r50.py',
        'model = dict(backbone=dict(depth=50, between_blocks=None, plugins=['
        "dict(cfg=dict(type='ContextBlok', ratio=0.25), "
        "position='after_conv3')]))\n")
    line = train_line(config)
    assert 'model.backbone.plugins[0].cfg.type' in line
    assert "'ContextBlock'" in line
    assert "'nonlocal_plugin.ContextBlock'" in line


def test_between_blocks_index_out_of_range(toy_coco):
    line = train_line(TOY_DET, 'model.backbone.between_blocks.0.after=[5]')
    assert "between_blocks[0]['after'] has index 5, out of range" in line


def test_cfg_option_the_config_lacks(toy_coco):
    line = train_line(TOY_DET, 'train_cfg.max_epoch=2')
    assert "no key 'max_epoch' in train_cfg" in line
    assert "Did you mean 'max_epochs'?" in line and '+train_cfg' in line


def test_checkpoint_of_another_model(toy_coco):
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/toy/mask-rcnn_r18-gcb-r4-c3-c5_fpn_toy-coco.py'))
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        other = MODELS.build(cfg.model)
    torch.save({'state_dict': other.state_dict()}, 'gc.pth')
    line = error_line(cli.test_main,
                      [TOY_DET, 'gc.pth', '--cfg-options', *SMALL])
    assert "checkpoint 'gc.pth' does not fit the config's model" in line
    assert "weights are not in it (backbone.between_layer3" in line
    assert 'of its' in line and 'context_block' in line
    assert len(line) < 1500  # counts and a few names, not every key


def test_bad_type_is_one_line_from_the_tool(toy_coco):
    proc = run_tool([
        sys.executable,
        osp.join(TOOLS, 'train.py'), TOY_DET, '--cfg-options', *SMALL,
        "model.backbone.between_blocks.0.cfg.type=NonLocal2dd"
    ], str(toy_coco))
    line = one_error(proc)
    assert "'NonLocal2dd'" in line and "'NonLocal2d'" in line
