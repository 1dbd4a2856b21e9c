"""Stand-ins registered for backbones whose library is not installed.

The blocks need only torch, mmcv and mmengine. ``ResNetNL`` needs mmdet and
``ResNetV1cNL`` mmseg; where that library is missing, a stand-in is
registered under the same name, so that a config naming it fails with one
line that says what to install instead of "not in the registry".
"""
from __future__ import annotations

from typing import Any

from ..registry import MODELS


class MissingLibraryError(ImportError):
    """A config names a class whose library is not installed."""


# mmdet's and mmseg's models import mmcv.ops; mmcv-lite has no compiled ops.
_MMCV_OPS = 'mmcv._ext'


def is_missing(err: ImportError, library: str) -> bool:
    """Whether ``err`` says that ``library`` itself is not installed, or
    that mmcv's compiled ops (which its models import) are not.

    Any other import error (a bug, a broken install) is not swallowed.
    """
    name = getattr(err, 'name', None) or ''
    return isinstance(err, ModuleNotFoundError) and (
        name.split('.')[0] == library or name == _MMCV_OPS)


def register_missing(name: str, err: ImportError, extra: str) -> type:
    """Registers a stand-in ``name`` that raises :class:`MissingLibraryError`.

    Args:
        name (str): The class name a config would use.
        err (ImportError): Why its library could not be imported (see
            :func:`is_missing`).
        extra (str): This package's extra that installs the library.
    """
    if err.name == _MMCV_OPS:
        message = (f'nonlocal_plugin.{name} needs {extra}, whose models '
                   "import mmcv's compiled ops, and the installed mmcv has "
                   'none (mmcv-lite?): install mmcv with its ops (MMCV_WITH_'
                   'OPS=1 pip install --no-build-isolation mmcv)')
    else:
        message = (f'nonlocal_plugin.{name} needs {extra}, which is not '
                   f"installed: pip install 'nonlocal_plugin[{extra}]' (or "
                   f'{extra} itself)')

    class StandIn:
        __doc__ = f'Stand-in: {extra} cannot be imported.'

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise MissingLibraryError(message)

    StandIn.__name__ = StandIn.__qualname__ = name
    stand_in = StandIn
    MODELS.register_module(name=name, module=stand_in)
    return stand_in
