"""The ``nonlocal_plugin`` scope never hands out another library's class."""
import pytest
from mmcv.cnn import NonLocal2d as MmcvNonLocal2d
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as SEG_MODELS

import nonlocal_plugin
from nonlocal_plugin import ContextBlock, NonLocal2D

REGISTRIES = {
    'mmdet': DET_MODELS,
    'mmseg': SEG_MODELS,
    'mmengine': ROOT_MODELS,
    'nonlocal_plugin': nonlocal_plugin.MODELS,
}


def build(scope, type_):
    with DefaultScope.overwrite_default_scope(
            None if scope == 'mmengine' else scope):
        return REGISTRIES[scope].build(dict(type=type_, in_channels=8))


@pytest.mark.parametrize('scope', REGISTRIES)
@pytest.mark.parametrize('name, suggestion', [
    ('NonLocal2d', 'NonLocal2D'),
    ('Nonlocal2D', 'NonLocal2D'),
    ('contextblock', 'ContextBlock'),
    ('NonLocal2DD', 'NonLocal2D'),
])
def test_a_name_we_lack_fails_listing_ours(scope, name, suggestion):
    # 'NonLocal2d' is mmcv's class: it used to be built silently.
    with pytest.raises(KeyError) as info:
        build(scope, f'nonlocal_plugin.{name}')
    message = str(info.value)
    assert f'Did you mean {suggestion}' in message
    for ours in ('ContextBlock', 'DisentangledNonLocal', 'NonLocal2D'):
        assert ours in message


def test_mmcv_spelling_names_mmcv_class_in_the_error():
    with pytest.raises(KeyError, match='mmcv.cnn.bricks.non_local.NonLocal2d'):
        build('mmdet', 'nonlocal_plugin.NonLocal2d')


@pytest.mark.parametrize('scope', REGISTRIES)
@pytest.mark.parametrize('name, cls', [('NonLocal2D', NonLocal2D),
                                       ('ContextBlock', ContextBlock)])
def test_our_names_build_ours(scope, name, cls):
    assert type(build(scope, f'nonlocal_plugin.{name}')) is cls


def test_unprefixed_mmcv_name_still_builds_mmcv():
    assert type(build('mmdet', 'NonLocal2d')) is MmcvNonLocal2d


def test_own_default_scope_still_reaches_generic_layers():
    # With nonlocal_plugin as the default scope, a block's norm ('BN') is
    # looked up here and must come from the parents; a case variant of one of
    # our names must not.
    with DefaultScope.overwrite_default_scope('nonlocal_plugin'):
        block = nonlocal_plugin.MODELS.build(
            dict(type='NonLocal2D', in_channels=8, norm_cfg=dict(type='BN')))
        assert type(block) is NonLocal2D
        with pytest.raises(KeyError, match='Did you mean NonLocal2D'):
            nonlocal_plugin.MODELS.build(
                dict(type='NonLocal2d', in_channels=8))
