"""``--cfg-options`` keys that the config does not have.

mmengine's ``merge_from_dict`` adds any key it is given, so a misspelled
override (``train_cfg.max_epoch=2``) is silently added, then ignored or
failing much later. :func:`check_cfg_options` accepts a key that the config
has, or a new last part that the object the dict builds takes: a keyword of
the ``__init__`` of the class its ``type`` names (following ``**kwargs`` up
the class hierarchy), or of the Runner for the top level, ``randomness``,
``env_cfg`` and the dataloaders. Anything else is refused with the close
matches; a leading ``+`` (``+model.foo=1``) adds a key on purpose.
"""
from __future__ import annotations

import difflib
import inspect
from importlib import import_module
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, Registry
from mmengine.runner import Runner

from .checks import SetupError

# Top-level keys read by the Runner's helpers or by these tools.
TOOL_KEYS = ('toy_dataset', 'torch_threads', 'exact_resume', 'runner_type',
             'sync_bn', 'find_unused_parameters', 'model_wrapper_cfg',
             'custom_imports', 'backend_args', 'vis_backends')
LOADER_KEYS = ('dataset', 'sampler', 'batch_sampler', 'collate_fn',
               'worker_init_fn')
ENV_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

# helper functions


def _parameters(fn: Any) -> Tuple[Set[str], bool]:
    """Named parameters of ``fn`` and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL,
                                                      p.VAR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def accepted_keywords(obj: Any) -> Optional[Set[str]]:
    """The keywords ``obj(...)`` takes, or None if it takes any.

    A class's ``__init__`` that takes ``**kwargs`` is taken to pass them on
    to its parent's; ``torch.nn.Module`` and ``object`` end the chain.
    """
    if not inspect.isclass(obj):
        names, var = _parameters(obj)
        return None if var else names
    accepted: Set[str] = set()
    for cls in obj.__mro__:
        if cls in (object, torch.nn.Module) or '__init__' not in vars(cls):
            continue
        names, var = _parameters(vars(cls)['__init__'])
        accepted |= names
        if not var:
            return accepted - {'self'}
    return accepted - {'self'}


def _registries(codebase: str) -> Iterable[Registry]:
    try:
        module = import_module(f'{codebase}.registry')
    except ImportError:  # not mmdet or mmseg: the tools refuse it later
        module = import_module('mmengine.registry')
    return [v for v in vars(module).values() if isinstance(v, Registry)]


def classes_named(type_name: str, codebase: str) -> List[Any]:
    """Whatever the codebase's registries hold under ``type_name``."""
    found = []
    with DefaultScope.overwrite_default_scope(codebase):
        for registry in _registries(codebase):
            try:
                obj = registry.get(type_name)
            except KeyError:
                obj = None
            if obj is not None and obj not in found:
                found.append(obj)
    return found


def _typeless_keywords(path: List[str]) -> Optional[Set[str]]:
    """What the tools and the Runner read from a dict without a type."""
    if not path:
        names, _ = _parameters(Runner.__init__)
        return names | set(TOOL_KEYS)
    if path == ['randomness']:
        names, _ = _parameters(Runner.set_randomness)
        return names
    if path == ['env_cfg']:
        return set(ENV_KEYS)
    if len(path) == 1 and path[0] in LOADERS:
        names, _ = _parameters(torch.utils.data.DataLoader.__init__)
        return names | set(LOADER_KEYS)
    return set()


def _new_key_allowed(node: dict, path: List[str], key: str,
                     codebase: str) -> Tuple[bool, Set[str]]:
    """Whether ``key`` may be added to ``node``; the names it could be."""
    type_name = node.get('type')
    if isinstance(type_name, str):
        names: Set[str] = set()
        for obj in classes_named(type_name, codebase):
            accepted = accepted_keywords(obj)
            if accepted is None:
                return True, set(node)
            names |= accepted
        if not names:  # an unknown type: the build will say so
            return True, set(node)
    else:
        names = _typeless_keywords(path) or set()
    return key in names, names | set(node)


def _refuse(option: str, where: str, key: str, candidates: Set[str],
            value: Any) -> SetupError:
    close = difflib.get_close_matches(key, sorted(map(str, candidates)), n=3,
                                      cutoff=0.6)
    hint = (f" Did you mean {', '.join(repr(c) for c in close)}?"
            if close else '')
    return SetupError(
        f'--cfg-options {option}={value!r}: the config has no key {key!r} '
        f'in {where or "its top level"}, and mmengine would silently add '
        f'it.{hint} To add a new key on purpose, write +{option}=...')


def check_option(cfg: Config, option: str, value: Any,
                 codebase: str) -> None:
    """Raises :class:`SetupError` unless ``option`` names a key of ``cfg``
    or one the object it builds takes (see the module docstring)."""
    parts = option.split('.')
    node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for depth, part in enumerate(parts):
        where = '.'.join(parts[:depth])
        last = depth == len(parts) - 1
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node)):
                raise SetupError(
                    f'--cfg-options {option}: {where} is a list of '
                    f'{len(node)} entries; {part!r} is not an index of it')
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise SetupError(
                f'--cfg-options {option}: {where} is {node!r}, not a dict, '
                f'so it has no key {part!r}. To replace it, set {where}='
                'dict(...) (in quotes) or write +' + option + '=...')
        if part in node:
            node = node[part]
            continue
        allowed, candidates = _new_key_allowed(node, parts[:depth], part,
                                               codebase)
        if last and allowed:
            return
        raise _refuse(option, where, part, candidates, value)


# main functions


def check_cfg_options(cfg: Config, options: Dict[str, Any] | None,
                      codebase: str) -> Dict[str, Any]:
    """The overrides to merge, once each key is checked.

    Args:
        cfg (Config): The config before the overrides.
        options (dict, optional): ``--cfg-options``, dotted keys; a key
            written ``+a.b`` is added without a check, as ``a.b``.
        codebase (str): ``'mmdet'`` or ``'mmseg'``, whose registries
            resolve the ``type`` of each dict.

    Returns:
        dict: The overrides with the ``+`` marks removed.

    Raises:
        SetupError: For a key that the config lacks and that no object it
            builds takes.
    """
    cleaned = {}
    for option, value in (options or {}).items():
        if option.startswith('+'):
            cleaned[option[1:]] = value
            continue
        check_option(cfg, option, value, codebase)
        cleaned[option] = value
    return cleaned
