"""Module-path patterns that name where blocks go inside a backbone.

Part of the insertion mechanism of :mod:`.insert_blocks`, which places the
blocks of the papers "Non-local Neural Networks" (Wang et al., CVPR 2018,
https://arxiv.org/abs/1711.07971), GCNet (https://arxiv.org/abs/1904.11492)
and DNL (https://arxiv.org/abs/2006.06668) between the residual blocks of
any backbone.

A pattern is a module path as ``named_modules`` writes it, in which each
dot-separated segment is one of:

* a child's name: ``layer3``, ``bn3``;
* a glob over the children's names (``fnmatch``, case-sensitive): ``*``,
  ``layer[23]``, ``stage?``;
* an integer, python-style, into a ``Sequential`` or ``ModuleList``:
  ``4``, ``-1`` (the last element), ``-2``;
* a python slice into one: ``1::2`` (every other element from the second),
  ``:3``, ``-2:``.

``layer3.-2`` is res4's last-but-one residual block of a ResNet, and
``layer[23].1::2`` is every other residual block of res3 and res4 (blocks 1
and 3 of res3 and 1, 3 and 5 of res4 in ResNet-50), where the NL paper puts
its 5 blocks. Matches come back as concrete paths with non-negative
indices, in the order of ``named_modules``.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from typing import List, Optional, Sequence, Tuple

from torch import nn

_INT = re.compile(r'-?\d+$')
_SLICE = re.compile(r'(-?\d*):(-?\d*)(?::(-?\d*))?$')
_GLOB_CHARS = set('*?[')


# helper functions


def split_path(path: str) -> Tuple[str, str]:
    """``'a.b.c'`` -> ``('a.b', 'c')``; ``'a'`` -> ``('', 'a')``."""
    parent, _, child = path.rpartition('.')
    return parent, child


def is_indexable(module: nn.Module) -> bool:
    """Whether integers and slices index the module's children."""
    return isinstance(module, (nn.Sequential, nn.ModuleList))


def is_plain_chain(module: nn.Module) -> bool:
    """Whether calling the module runs its children in order, each on the
    last one's output (``nn.Sequential``'s own forward)."""
    return (isinstance(module, nn.Sequential)
            and type(module).forward is nn.Sequential.forward)


def check_pattern(where: str, pattern: object) -> List[str]:
    """A pattern's segments; a malformed pattern raises naming ``where``."""
    if not isinstance(pattern, str):
        raise TypeError(f'{where} must be a module path (str), e.g. '
                        f"'layer3.-2', got {pattern!r}")
    segments = pattern.split('.')
    if not pattern or not all(segments):
        raise ValueError(f"{where} {pattern!r} has an empty segment; write "
                         "a module path such as 'layer3.-2' or "
                         "'stages.2.blocks.-1'")
    for segment in segments:
        match = _SLICE.match(segment)
        if match and match.group(3) is not None and match.group(3) != '':
            if int(match.group(3)) == 0:
                raise ValueError(f'{where} {pattern!r}: slice step 0 in '
                                 f'{segment!r}')
    return segments


def _select(module: nn.Module, segment: str,
            skip: Tuple[type, ...]) -> List[Tuple[str, nn.Module]]:
    """The children of ``module`` that ``segment`` names, in order."""
    children = [(name, child) for name, child in module.named_children()
                if not isinstance(child, skip)]
    if _INT.match(segment):
        if is_indexable(module):
            index = int(segment)
            if -len(children) <= index < len(children):
                return [children[index]]
            return []
        return [(n, c) for n, c in children if n == segment]
    match = _SLICE.match(segment)
    if match:
        if not is_indexable(module):
            return []
        start, stop, step = (int(g) if g else None for g in match.groups())
        return children[slice(start, stop, step)]
    if _GLOB_CHARS & set(segment):
        return [(n, c) for n, c in children
                if fnmatch.fnmatchcase(n, segment)]
    return [(n, c) for n, c in children if n == segment]


def _no_match_message(where: str, pattern: str, depth: int,
                      frontier: Sequence[Tuple[str, nn.Module]],
                      skip: Tuple[type, ...]) -> str:
    """Says which segment matched nothing and the nearest module names."""
    segments = pattern.split('.')
    prefix = '.'.join(segments[:depth])
    segment = segments[depth]
    candidates = []
    details = []
    for path, module in frontier:
        names = [n for n, c in module.named_children()
                 if not isinstance(c, skip)]
        candidates += [f'{path}.{n}' if path else n for n in names]
        owner = f"'{path}'" if path else 'the backbone'
        owner += f' ({type(module).__name__})'
        if not names:
            details.append(f'{owner} has no children')
        elif (_INT.match(segment) or _SLICE.match(segment)) and \
                is_indexable(module):
            details.append(f'{owner} has {len(names)} children: indices 0 '
                           f'to {len(names) - 1}, or {-len(names)} to -1')
        elif _INT.match(segment) or _SLICE.match(segment):
            details.append(f'{owner} is not a Sequential or ModuleList, so '
                           'integers and slices do not index it')
        if len(details) >= 3:
            break
    wanted = f'{prefix}.{segment}' if prefix else segment
    nearest = difflib.get_close_matches(wanted, candidates, n=5, cutoff=0.0)
    detail = '; '.join(details)
    return (f'{where} {pattern!r} matches no module: segment {segment!r}'
            f'{" after " + repr(prefix) if prefix else ""} matches nothing'
            f'{" (" + detail + ")" if detail else ""}. Nearest existing '
            f'modules: {", ".join(nearest) if nearest else "none"}')


# main function


def match_modules(root: nn.Module,
                  pattern: str,
                  *,
                  where: str,
                  skip: Tuple[type, ...] = ()) -> List[Tuple[str, nn.Module]]:
    """The ``(path, module)`` pairs that ``pattern`` names below ``root``.

    Args:
        root (nn.Module): The backbone.
        pattern (str): A module-path pattern (see the module docstring).
        where (str): How the caller names the option, for errors, e.g.
            ``"blocks[0]['after']"``.
        skip (tuple[type]): Children of these types are never matched (the
            containers of inserted blocks).

    Returns:
        list[tuple[str, nn.Module]]: Concrete paths (non-negative indices)
        and their modules, in the order of ``named_modules``.

    Raises:
        ValueError: The pattern is malformed or matches nothing; the message
            names the segment that failed and the nearest module names.
    """
    segments = check_pattern(where, pattern)
    frontier: List[Tuple[str, nn.Module]] = [('', root)]
    for depth, segment in enumerate(segments):
        found = []
        for path, module in frontier:
            for name, child in _select(module, segment, skip):
                found.append((f'{path}.{name}' if path else name, child))
        if not found:
            raise ValueError(
                _no_match_message(where, pattern, depth, frontier, skip))
        frontier = found
    return frontier


def neighbour(root: nn.Module, path: str,
              offset: int) -> Optional[Tuple[str, nn.Module]]:
    """The sibling ``offset`` places from ``path`` in an indexable parent.

    Returns None when the parent is not indexable or the index falls off
    either end.
    """
    parent_path, child = split_path(path)
    parent = root.get_submodule(parent_path) if parent_path else root
    if not is_indexable(parent):
        return None
    names = [name for name, _ in parent.named_children()]
    index = names.index(child) + offset
    if not 0 <= index < len(names):
        return None
    name = names[index]
    sibling = f'{parent_path}.{name}' if parent_path else name
    return sibling, getattr(parent, name)
