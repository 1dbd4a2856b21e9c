"""The model of a config, built once before the Runner, and the checkpoint
it will load.

* :func:`check_model` builds the model (no weights are loaded) so that a
  bad model config ends in one :class:`~.checks.SetupError` line naming the
  option, before any data is loaded: a misspelled block ``type`` (with the
  close matches from this package's and mmcv's names, wherever the block
  sits, also in mmdet's and mmseg's own ``plugins``), a ``stages`` tuple of
  the wrong length, a ``between_blocks`` index out of range, an unexpected
  argument.
* :func:`check_checkpoint_fits` compares a checkpoint's weights with the
  model's: for testing or resuming every weight must match; for
  ``load_from`` at least one. A mismatch is told as counts and the first
  few names, instead of mmengine's list of every key.
"""
from __future__ import annotations

import copy
import os.path as osp
import traceback
from importlib import import_module
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch import nn

from ..backbones._blocks import check_block_type
from .checks import SetupError

SHOWN = 3
BUILD_ERRORS = (KeyError, ValueError, TypeError, AssertionError)

# helper functions


def _block_types(node: Any, where: str) -> Iterator[Tuple[str, Any]]:
    """``(config path, type)`` of every block in ``plugins`` and
    ``between_blocks`` lists below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('plugins', 'between_blocks') and isinstance(
                    value, (list, tuple)):
                for i, entry in enumerate(value):
                    cfg = entry.get('cfg') if isinstance(entry, dict) else None
                    if isinstance(cfg, dict) and 'type' in cfg:
                        yield f'{where}.{key}[{i}].cfg.type', cfg['type']
            yield from _block_types(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _block_types(value, f'{where}[{i}]')


def _message(err: BaseException) -> str:
    """One line for an error raised while the model was built."""
    if len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err)
    if not text:  # a bare assert: show it
        frame = traceback.extract_tb(err.__traceback__)[-1]
        text = (f'assertion failed at {frame.filename}:{frame.lineno}: '
                f'{frame.line}')
    return ' '.join(text.split())


def _state_dict(path: str) -> Optional[Dict[str, Any]]:
    """The checkpoint's weights, or None if they cannot be read safely."""
    kwargs = {'map_location': 'cpu'}
    try:
        checkpoint = torch.load(path, mmap=True, **kwargs)
    except RuntimeError:  # not a zip archive: no mmap
        checkpoint = torch.load(path, **kwargs)
    except Exception as err:  # noqa: B902 an unpickling refusal, e.g.
        print_log(f'Could not read the weights of {path} to compare them '
                  f'with the model ({type(err).__name__}: {err})',
                  logger='current')
        return None
    state = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state, dict):
        return None
    return {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state.items()
    }


def _mismatch(model: nn.Module,
              state: Dict[str, Any]) -> Tuple[List[str], List[str], List[str]]:
    """Missing, unexpected and differently shaped weight names."""
    own = model.state_dict()
    missing = [k for k in own
               if k not in state and 'num_batches_tracked' not in k]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f'{k} ({list(state[k].shape)} in the checkpoint, '
        f'{list(own[k].shape)} in the model)' for k in own
        if k in state and hasattr(state[k], 'shape')
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, shapes


def _names(items: List[str]) -> str:
    shown = ', '.join(items[:SHOWN])
    return shown + (', ...' if len(items) > SHOWN else '')


def summary(model: nn.Module, missing: List[str], unexpected: List[str],
            shapes: List[str], total: int) -> str:
    """Counts and the first few names of a mismatch."""
    own = len(model.state_dict())
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {own} weights are not "
                     f'in it ({_names(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} of its {total} entries are not in '
                     f'the model ({_names(unexpected)})')
    if shapes:
        parts.append(f'{len(shapes)} differ in shape ({_names(shapes)})')
    return '; '.join(parts)


# main functions


def build_model(cfg: Config) -> nn.Module:
    """The config's model, built through its codebase's registry.

    Raises:
        SetupError: For a block type no registry knows, or any
            ``KeyError``, ``ValueError``, ``TypeError`` or
            ``AssertionError`` raised while building.
    """
    for where, type_name in _block_types(cfg.get('model'), 'model'):
        try:
            check_block_type(where, type_name)
        except KeyError as err:
            raise SetupError(f'model config: {_message(err)}') from None
    codebase = cfg.get('default_scope')
    registry = import_module(f'{codebase}.registry').MODELS
    with DefaultScope.overwrite_default_scope(codebase):
        try:
            return registry.build(copy.deepcopy(cfg.model))
        except BUILD_ERRORS as err:
            raise SetupError(f'model config: {_message(err)}') from None


def check_checkpoint_fits(model: nn.Module, path: Any, *, strict: bool,
                          what: str, fix: str) -> None:
    """Compares the weights in ``path`` with ``model``'s.

    Args:
        model (nn.Module): The config's model.
        path (str): A local checkpoint; anything else (a URL) is skipped.
        strict (bool): Every weight must match (test, resume); otherwise
            at least one must (``load_from``), and a partial match is
            logged as counts.
        what (str): What the checkpoint is for, e.g. ``'--resume'``.
        fix (str): What to do about a mismatch.

    Raises:
        SetupError: With the counts and the first few names.
    """
    if not isinstance(path, str) or not osp.isfile(path):
        return
    state = _state_dict(path)
    if state is None:
        return
    missing, unexpected, shapes = _mismatch(model, state)
    if not (missing or unexpected or shapes):
        return
    told = summary(model, missing, unexpected, shapes, len(state))
    matched = len(model.state_dict()) - len(missing) - len(shapes)
    if strict or matched <= 0:
        raise SetupError(f'{what}: checkpoint {path!r} does not fit the '
                         f"config's model: {told}. {fix}")
    print_log(f'{what}: {path} fits the model in part: {told}',
              logger='current')


def check_model(cfg: Config, *, checkpoint: Optional[str] = None,
                strict: bool = True, what: str = 'checkpoint',
                fix: str = '') -> None:
    """Builds the model once, and compares ``checkpoint`` with it.

    Args:
        cfg (Config): The run's config.
        checkpoint (str, optional): The checkpoint the run will load.
        strict (bool): See :func:`check_checkpoint_fits`. Default: True.
        what (str): Names the checkpoint's role in messages.
        fix (str): What to do about a mismatch.

    Raises:
        SetupError: For a bad model config or a checkpoint that does not
            fit.
    """
    model = build_model(cfg)
    if checkpoint is not None:
        check_checkpoint_fits(model, checkpoint, strict=strict, what=what,
                              fix=fix)
