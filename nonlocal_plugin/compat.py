"""Fixes to peer libraries, each applied on import only where it is needed.

Each fix is applied only when a probe shows that the installed version
still has the bug, is logged once through mmengine's logger, and can be
switched off with the environment variable ``NONLOCAL_PLUGIN_NO_FIXES``:
``all`` (or ``1``) for every fix, or a comma-separated list of the names
below. :func:`applied_fixes` tells which fixes are in force.

* ``mmseg_plugin_chaining``: mmseg 1.2.2's ``Bottleneck.forward_plugin``
  feeds every plugin the block's input ``x`` rather than the previous
  plugin's output, so of two plugins at one position only the last has any
  effect. The probe runs the installed method on two stand-in plugins.
* ``mmengine_safe_resume``: mmengine 0.10.7 resumes with
  ``torch.load(path)``; since torch 2.6 that means ``weights_only=True``,
  which refuses the objects mmengine itself writes into its checkpoints:
  its ``HistoryBuffer`` logs, numpy scalars and arrays, and the buffers'
  statistics functions, pickled as ``getattr(HistoryBuffer, 'min')``. The
  probe saves a ``HistoryBuffer`` to memory and loads it with torch's
  default. The fix adds the buffer types to torch's allowlist and stops
  buffers pickling those functions (they are class-level and restored on
  load anyway), so checkpoints written with this package imported resume
  with ``weights_only=True``: no arbitrary pickled code runs and
  ``getattr`` stays off the allowlist. Checkpoints written by mmengine
  without this package still hold the ``getattr`` call; torch's error then
  says how to load them if they are trusted. On torch < 2.6, where
  ``torch.load`` unpickles anything by default, the probe finds no bug and
  nothing is changed; that torch offers no protection against a malicious
  checkpoint unless ``weights_only=True`` is passed.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any, Callable, Dict, List

import numpy as np
import torch

ENV_VAR = 'NONLOCAL_PLUGIN_NO_FIXES'

_applied: List[str] = []


def _log(message: str) -> None:
    from mmengine.logging import print_log
    print_log(f'nonlocal_plugin: {message} (set {ENV_VAR}=all to disable)',
              logger='current')


def disabled_fixes() -> List[str]:
    """The fix names switched off through :data:`ENV_VAR`."""
    value = os.environ.get(ENV_VAR, '').strip()
    if value.lower() in ('1', 'all', 'true', 'yes'):
        return list(FIXES)
    return [name.strip() for name in value.split(',') if name.strip()]


def applied_fixes() -> List[str]:
    """The names of the fixes applied in this process."""
    return list(_applied)


# mmseg: plugins at one position


def _chained_forward_plugin(self, x, plugin_names):
    """Applies the plugins at a position in order, each to the last output."""
    out = x
    for name in plugin_names:
        out = getattr(self, name)(out)
    return out


class _PluginProbe:
    double = staticmethod(lambda v: v * 2)
    add_one = staticmethod(lambda v: v + 1)


def chains_plugins(forward_plugin) -> bool:
    """Whether ``forward_plugin`` feeds each plugin the previous output."""
    return forward_plugin(_PluginProbe(), 1, ['double', 'add_one']) == 3


def mmseg_needs_plugin_chaining() -> bool:
    """Whether the installed mmseg (if any) has the plugin-chaining bug."""
    try:
        from mmseg.models.backbones import resnet
    except ImportError:
        return False
    return not chains_plugins(resnet.Bottleneck.forward_plugin)


def patch_mmseg_forward_plugin() -> bool:
    """Makes mmseg's bottleneck chain its plugins; True if it patched."""
    if not mmseg_needs_plugin_chaining():
        return False
    from mmseg.models.backbones import resnet
    resnet.Bottleneck.forward_plugin = _chained_forward_plugin
    _log("mmseg's Bottleneck.forward_plugin now chains the plugins at one "
         'position (the installed mmseg feeds each the block input)')
    return True


# mmengine: resume under torch's weights_only default


def _numpy_safe_globals():
    """The numpy reconstructors and dtypes that mmengine's logs pickle."""
    core = getattr(np, '_core', None) or np.core
    found = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray,
             np.dtype]
    found += [type(np.dtype(name)) for name in np.sctypeDict]
    return found


def _history_buffer_state(self) -> dict:
    """A ``HistoryBuffer``'s pickled state, without its statistics methods.

    mmengine's own ``__getstate__`` adds the class-level table of statistics
    functions to every buffer, which only an unsafe unpickler can rebuild;
    ``__setstate__`` restores the defaults from the class.
    """
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def default_load_refuses(obj: Any) -> bool:
    """Whether ``torch.load`` with its defaults refuses ``obj`` once saved.

    True where the default is ``weights_only=True`` (torch >= 2.6) and
    ``obj`` holds a type that is not allowlisted.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer)
    except pickle.UnpicklingError:
        return True
    return False


def default_load_refuses_mmengine_logs() -> bool:
    """Whether ``torch.load``'s defaults refuse an mmengine log buffer."""
    from mmengine.logging import HistoryBuffer
    return default_load_refuses({'log': HistoryBuffer([1.0], [1])})


def allow_mmengine_checkpoints() -> bool:
    """Lets ``torch.load(weights_only=True)`` read mmengine checkpoints.

    Returns:
        bool: True if it patched; False where torch's default load already
        reads them (torch < 2.6) or torch has no allowlist.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    if not default_load_refuses_mmengine_logs():
        return False
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_state
    torch.serialization.add_safe_globals([HistoryBuffer,
                                          *_numpy_safe_globals()])
    _log("mmengine's log buffers are allowlisted for torch.load("
         'weights_only=True) and no longer pickle getattr calls, so '
         'training resumes under torch >= 2.6')
    return True


FIXES: Dict[str, Callable[[], bool]] = {
    'mmseg_plugin_chaining': patch_mmseg_forward_plugin,
    'mmengine_safe_resume': allow_mmengine_checkpoints,
}


def apply_all() -> List[str]:
    """Applies every fix that is needed and not switched off, once.

    Returns:
        list[str]: The names of the fixes in force.
    """
    skip = disabled_fixes()
    unknown = sorted(set(skip) - set(FIXES))
    if unknown:
        raise ValueError(f'{ENV_VAR} names unknown fixes {unknown}; the fixes '
                         f'are {sorted(FIXES)} (or "all")')
    for name, fix in FIXES.items():
        if name not in skip and name not in _applied and fix():
            _applied.append(name)
    return applied_fixes()
