"""The README's examples: its config snippets build the models they
describe, its type strings resolve, and its two commands are wired up."""
import os.path as osp
import re

import pytest
from mmdet.registry import HOOKS as DET_HOOKS
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from nonlocal_plugin import ContextBlock, DisentangledNonLocalDet2D, NonLocal2D

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as _f:
    README = _f.read()
SNIPPETS = re.findall(r'```python\n(.*?)```', README, flags=re.S)

# helper functions


def build_backbone(snippet: str, tmp_path):
    """The backbone of mmdet's Mask R-CNN R50 with ``snippet`` merged in."""
    path = tmp_path / 'snippet.py'
    path.write_text(
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n" +
        snippet)
    cfg = Config.fromfile(str(path))
    if 'custom_imports' not in cfg:  # the snippet shows the model part only
        cfg.merge_from_dict(
            dict(custom_imports=dict(imports=['nonlocal_plugin'])))
    backbone = cfg.model.backbone
    backbone.init_cfg = None  # no download
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DET_MODELS.build(backbone)


def blocks_of(backbone, cls):
    return [name for name, m in backbone.named_modules()
            if isinstance(m, cls)]


# tests


def test_readme_has_the_snippets_tested_here():
    assert len(SNIPPETS) == 4


def test_plugins_snippet_puts_gc_after_conv3_of_c3_to_c5(tmp_path):
    backbone = build_backbone(SNIPPETS[0], tmp_path)
    names = blocks_of(backbone, ContextBlock)
    # R50: 4 + 6 + 3 bottlenecks in c3-c5, one block after each conv3.
    assert len(names) == 13
    assert all(n.startswith(('layer2.', 'layer3.', 'layer4.'))
               for n in names)
    assert all(n.endswith('.context_block') for n in names)


def test_between_blocks_snippet_puts_one_nl_before_res4_last_block(
        tmp_path):
    backbone = build_backbone(SNIPPETS[1], tmp_path)
    assert blocks_of(backbone, NonLocal2D) == [
        'between_layer3.after4_nonlocal_block'
    ]


def test_after_add_snippet_puts_one_dnl_in_res4_last_but_one_block(
        tmp_path):
    backbone = build_backbone(SNIPPETS[2], tmp_path)
    assert blocks_of(backbone, DisentangledNonLocalDet2D) == [
        'layer3.4.dnl_det_block'
    ]


def test_insert_blocks_snippet_puts_one_nl_before_res4_last_block(
        tmp_path):
    backbone = build_backbone(SNIPPETS[3], tmp_path)
    assert blocks_of(backbone, NonLocal2D) == [
        'between_layer3.after4_nonlocal_block'
    ]


@pytest.mark.parametrize(
    'type_name', sorted(set(re.findall(r"nonlocal_plugin\.[A-Z]\w+",
                                       README))))
def test_every_type_string_in_the_readme_resolves(type_name):
    """Each type resolves (a model or a hook), or is one of the README's
    examples of a misspelled type, which must then fail to resolve."""
    text = README.replace('\n', ' ')
    misspelled = (f"'{type_name}' is not in the nonlocal_plugin scope" in text
                  or f"is '{type_name}', which is neither" in text)
    registry = DET_HOOKS if type_name.endswith('Hook') else DET_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        if not misspelled:
            assert registry.get(type_name) is not None, type_name
            return
        with pytest.raises(KeyError, match='is not in the nonlocal_plugin'):
            registry.get(type_name)


def test_the_two_commands_and_ci_are_wired():
    commands = re.search(r'```bash\n(.*?)```', README, flags=re.S).group(1)
    assert commands.startswith('make demo') and '\nmake test' in commands
    toy = re.search(r'python tools/train\.py (configs/toy/\S+\.py)',
                    commands).group(1)
    assert osp.isfile(osp.join(ROOT, toy))
    with open(osp.join(ROOT, 'Makefile'), encoding='utf-8') as f:
        makefile = f.read()
    assert f'TOY_CONFIG ?= {toy}' in makefile
    assert re.search(r'^demo: setup\n\t\$\(PY\) tools/train\.py '
                     r'\$\(TOY_CONFIG\)$', makefile, flags=re.M)
    with open(osp.join(ROOT, '.ci', 'run'), encoding='utf-8') as f:
        assert 'make test' in f.read()
