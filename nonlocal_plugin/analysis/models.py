"""Models and inputs for the analysis tools, mmdet and mmseg alike.

A config's ``default_scope`` picks the library (as in :mod:`..apis.run`).
The model is built from the config alone (no pretrained weights are read),
optionally loaded from a checkpoint, and fed a batch made by its own data
preprocessor, so padding and normalisation are the library's.
"""
from __future__ import annotations

from importlib import import_module
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor, nn

from ..apis.run import codebase_of, load_config
from ..blocks import ContextBlock, DisentangledNonLocalDet2D, NonLocalNd

# helper functions


def _peer_block_types() -> Tuple[type, ...]:
    """mmcv's and mmseg's own attention blocks, where importable."""
    types = []
    try:
        from mmcv.cnn import ContextBlock as MmcvContextBlock
        from mmcv.cnn import NonLocal2d
        types += [MmcvContextBlock, NonLocal2d]
    except ImportError:  # pragma: no cover - mmcv is a dependency
        pass
    try:
        from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d
        types.append(DisentangledNonLocal2d)
    except ImportError:
        pass
    return tuple(types)


def _sample(codebase: str, shape: Sequence[int]):
    """An empty data sample of an image of ``shape`` (H, W)."""
    height, width = int(shape[0]), int(shape[1])
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                scale_factor=(1.0, 1.0))
    if codebase == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample(metainfo=meta)
    from mmseg.structures import SegDataSample
    return SegDataSample(metainfo=meta)


# main functions


def build_model(config: str | Config,
                checkpoint: str | None = None,
                cfg_options: Dict | None = None) -> Tuple[nn.Module, str]:
    """The model of a config in eval mode, and its codebase.

    Args:
        config (str | Config): A config file or a loaded config.
        checkpoint (str, optional): Weights to load (``state_dict`` of an
            mmengine checkpoint, or a bare state dict).
        cfg_options (dict, optional): Config overrides.

    Returns:
        tuple: ``(model, 'mmdet' | 'mmseg')``.
    """
    cfg = (config if isinstance(config, Config) else load_config(
        config, cfg_options))
    codebase = codebase_of(cfg)
    init_default_scope(codebase)
    model_cfg = cfg.model.copy()
    # Built to be looked at: no download of pretrained weights.
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = import_module(f'{codebase}.registry').MODELS.build(model_cfg)
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        logger='silent')
    model.cfg = cfg
    return model.eval(), codebase


def image_batch(model: nn.Module, codebase: str,
                images: Sequence[np.ndarray]) -> Tuple[Tensor, List]:
    """Inputs of ``model`` for images as they are (no resize).

    Args:
        model (nn.Module): An mmdet or mmseg model with a data preprocessor.
        codebase (str): ``'mmdet'`` or ``'mmseg'``.
        images (Sequence[np.ndarray]): ``[H, W, 3]`` BGR uint8 images (as
            mmcv reads them), one batch each.

    Returns:
        tuple: The preprocessed ``[B, 3, H', W']`` inputs (padded as the
        config pads) and their data samples.
    """
    inputs = [
        torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        for img in images
    ]  # each [3, H, W]
    samples = [_sample(codebase, img.shape[:2]) for img in images]
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=inputs, data_samples=samples), False)
    return data['inputs'], data['data_samples']


def dummy_batch(model: nn.Module, codebase: str,
                shape: Sequence[int]) -> Tuple[Tensor, List]:
    """A one-image batch of ``shape`` (H, W) for counting FLOPs."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (int(shape[0]), int(shape[1]), 3),
                         dtype=np.uint8)
    return image_batch(model, codebase, [image])


def tensor_forward(model: nn.Module, codebase: str, inputs: Tensor,
                   samples: List):
    """The model's tensor-mode forward (backbone, neck, heads; no
    post-processing into results), which is what mmdet's and mmseg's
    FLOPs tools trace."""
    del codebase  # both libraries' models take the same call
    return model._forward(inputs, samples)


def attention_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The attention blocks inside ``model``, outermost only, by name.

    This package's NL, DNL and GC blocks, and mmcv's / mmseg's own NL, GC
    and DNL blocks where a config uses them (e.g. mmseg's ``NLHead``).
    """
    types = (NonLocalNd, ContextBlock,
             DisentangledNonLocalDet2D) + _peer_block_types()
    found: List[Tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(
                name.startswith(outer + '.') for outer, _ in found):
            found.append((name, module))
    return found
