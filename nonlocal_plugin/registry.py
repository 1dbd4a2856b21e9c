"""The package's own registry scope.

The blocks register in a child of mmengine's root ``MODELS`` registry with the
scope ``nonlocal_plugin``. From an mmdet or mmseg config they are written with
the scope prefix, ``type='nonlocal_plugin.NonLocal2D'``, which the parent
registries resolve through the root. Nothing is registered in the root or in
mmdet's and mmseg's registries, so mmcv's ``NonLocal2d`` and ``ContextBlock``
keep their names and are never shadowed, and ours are never shadowed by them.

mmengine's registries fall back to the parent for a name they lack, so
``'nonlocal_plugin.NonLocal2d'`` (mmcv's spelling) would silently build
mmcv's block. :class:`StrictScopeRegistry` closes that gap: a name asked of
this scope from another scope resolves to one of this package's classes or
fails with a ``KeyError`` that lists them. Only when ``nonlocal_plugin`` is
itself the default scope (everything built unprefixed goes through it) do
other names (``'Conv2d'``, ``'BN'``) reach the parents, and even then a
name that differs from one of ours only in case does not.
"""
from __future__ import annotations

import difflib
from typing import List, Optional, Type

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope, Registry

SCOPE = 'nonlocal_plugin'


class StrictScopeRegistry(Registry):
    """A registry whose scope never hands out another library's class."""

    def names(self) -> List[str]:
        """The names registered in this scope, sorted."""
        return sorted(self._module_dict)

    def unknown_name_message(self, name: str) -> str:
        ours = self.names()
        lowered = {n.lower(): n for n in ours}
        close = difflib.get_close_matches(name, ours, n=3, cutoff=0.6)
        if name.lower() in lowered and lowered[name.lower()] not in close:
            close.insert(0, lowered[name.lower()])
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        elsewhere = ''
        parent_cls = self._parent_get(name)
        if parent_cls is not None:
            elsewhere = (f" ('{name}' without the '{self.scope}.' prefix is "
                         f'{parent_cls.__module__}.{parent_cls.__name__}.)')
        return (f"'{self.scope}.{name}' is not in the {self.scope} scope."
                f'{hint} Its names are: {", ".join(ours)}.{elsewhere}')

    def _parent_get(self, name: str) -> Optional[Type]:
        parent = self.parent
        while parent is not None:
            if name in parent._module_dict:
                return parent._module_dict[name]
            parent = parent.parent
        return None

    def get(self, key: str) -> Optional[Type]:
        scope, name = self.split_scope_key(key)
        if scope is not None and scope != self.scope:
            return super().get(key)
        self.import_from_location()
        if name in self._module_dict:
            return super().get(key)
        current = DefaultScope.get_current_instance()
        own_default = (scope is None and current is not None
                       and current.scope_name == self.scope)
        shadows_ours = name.lower() in {n.lower() for n in self._module_dict}
        if own_default and not shadows_ours:
            return super().get(key)
        raise KeyError(self.unknown_name_message(name))


MODELS = StrictScopeRegistry('model', parent=MMENGINE_MODELS, scope=SCOPE,
                             locations=['nonlocal_plugin'])
# The training hooks (atomic checkpoints, exact resume) of the tools; their
# module is imported when a hook is looked up.
HOOKS = StrictScopeRegistry('hook', parent=MMENGINE_HOOKS, scope=SCOPE,
                            locations=['nonlocal_plugin.apis.resume_hooks'])
