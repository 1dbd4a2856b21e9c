"""Fixes for the pinned OpenMMLab stack, applied when the package is imported.

* mmseg 1.2.2's ``Bottleneck.forward_plugin`` feeds every plugin the block's
  input ``x`` rather than the previous plugin's output, so of two plugins at
  one position only the last has any effect. The fix is installed only when
  a probe shows the installed mmseg still has the bug.
* mmengine 0.10.7 resumes with ``torch.load(path)``; since torch 2.6 that
  means ``weights_only=True``, which refuses the objects mmengine itself
  writes into its checkpoints: its ``HistoryBuffer`` logs, numpy scalars and
  arrays, and the buffers' statistics functions, pickled as
  ``getattr(HistoryBuffer, 'min')``. The buffer types are added to torch's
  allowlist, and buffers stop pickling those functions (they are class-level
  and restored on load anyway), so checkpoints written with this package
  imported resume with ``weights_only=True``: no arbitrary pickled code runs
  and ``getattr`` stays off the allowlist. Checkpoints written by mmengine
  without this package still hold the ``getattr`` call; torch's error then
  says how to load them if they are trusted.
"""
import numpy as np
import torch


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


def patch_mmseg_forward_plugin() -> bool:
    """Makes mmseg's bottleneck chain its plugins; True if it patched."""
    try:
        from mmseg.models.backbones import resnet
    except ImportError:
        return False
    if chains_plugins(resnet.Bottleneck.forward_plugin):
        return False
    resnet.Bottleneck.forward_plugin = _chained_forward_plugin
    return True


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


def allow_mmengine_checkpoints() -> None:
    """Lets ``torch.load(weights_only=True)`` read mmengine checkpoints."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_state
    torch.serialization.add_safe_globals([HistoryBuffer,
                                          *_numpy_safe_globals()])


def apply_all() -> None:
    patch_mmseg_forward_plugin()
    allow_mmengine_checkpoints()
