"""Inserting blocks into a built backbone without touching its weights.

The mechanism under :mod:`.insert_blocks` (any backbone) and
``between_blocks`` of :mod:`.det_resnet` / :mod:`.seg_resnet`. It places
the blocks of "Non-local Neural Networks" (Wang et al., CVPR 2018,
https://arxiv.org/abs/1711.07971), GCNet (https://arxiv.org/abs/1904.11492)
and DNL (https://arxiv.org/abs/2006.06668) after or before chosen modules.

* **Weights.** The backbone's modules stay where they are, so its own
  state-dict keys do not change. The blocks live in ``between_*``
  containers added to it: a block after ``layer3.4`` is
  ``between_layer3.after4_nonlocal_block``, one after ``layer2.0.bn3`` is
  ``between_layer2_0.after_bn3_context_block``. A state dict with none of
  these keys (a plain backbone's checkpoint) loads with ``strict=True`` and
  leaves the blocks as they are, the identity at init.
* **Forward.** A forward hook on the module runs the blocks on its output
  (a pre-hook on its input for ``before``); ``torch.jit.trace`` and ONNX
  export follow hooks. A hook on the backbone itself re-attaches a hook
  whose module was replaced (mmengine turns SyncBN into BN that way), and
  raises if a block did not run exactly once in a forward.
* **Training.** Blocks after a frozen module (``frozen_stages``) are frozen
  and stay in eval mode; ``with_cp`` checkpoints the blocks;
  ``init_weights`` re-initialises them to the identity.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ._blocks import (
    InsertedBlocks,
    build_block,
    check_cfg,
    check_shape,
    run_block,
)
from ._channels import input_channels, output_channels
from ._paths import is_plain_chain, match_modules, neighbour, split_path

ENTRY_KEYS = ('cfg', 'after', 'before')


# helper functions


def _is_frozen(root: nn.Module, path: str) -> bool:
    """Whether the module at ``path`` (or, without parameters of its own,
    its nearest ancestor with some) has only frozen parameters."""
    while True:
        module = root.get_submodule(path) if path else root
        params = list(module.parameters())
        if params:
            return not any(p.requires_grad for p in params)
        if not path:
            return False
        path = split_path(path)[0]


class SiteHook:
    """Runs the blocks at one site: after a module (a forward hook on its
    output) or before it (a forward pre-hook on its input)."""

    def __init__(self, blocks: InsertedBlocks, keys: List[str], path: str,
                 where: str, with_cp: bool) -> None:
        self.blocks, self.keys = blocks, keys
        self.path, self.where, self.with_cp = path, where, with_cp
        self.calls = 0

    def _run(self, module: nn.Module, x: Any) -> Tensor:
        if not isinstance(x, Tensor):
            got = 'outputs' if self.where == 'after' else 'is called with'
            raise TypeError(
                f"the blocks {self.where} '{self.path}' need one feature map "
                f'[N, C, H, W], but {type(module).__name__} {got} '
                f'{type(x).__name__}; insert them {self.where} a module that '
                'takes and returns one tensor')
        self.calls += 1
        for key in self.keys:
            x = run_block(self.blocks[key], x, self.with_cp)
        return x

    def __call__(self, module: nn.Module, args: tuple,
                 output: Any = None) -> Any:
        if self.where == 'after':
            return self._run(module, output)
        first = args[0] if args else None
        return (self._run(module, first), ) + tuple(args[1:])

    def _hooks(self, module: nn.Module) -> Dict[int, Any]:
        return (module._forward_hooks
                if self.where == 'after' else module._forward_pre_hooks)

    def attach(self, module: nn.Module) -> None:
        """Hooks the module, or keeps its hook last among its forward hooks
        (first among its pre-hooks), so that other hooks on the module see
        the module's own output (its input as called)."""
        hooks = self._hooks(module)
        found = [key for key, hook in hooks.items() if hook is self]
        if not found:
            if self.where == 'after':
                module.register_forward_hook(self)
            else:
                module.register_forward_pre_hook(self, prepend=True)
        else:
            hooks.move_to_end(found[0], last=self.where == 'after')


class Guard:
    """Hooks on the backbone itself: re-attaches site hooks to replaced
    modules, checks that every site ran once, and lets a state dict without
    the inserted blocks load strictly."""

    def __init__(self) -> None:
        self.sites: List[SiteHook] = []
        self.containers: List[str] = []

    def before_forward(self, root: nn.Module, args: tuple) -> None:
        for site in self.sites:
            # The module may be new (revert_sync_batchnorm replaces BNs).
            site.attach(root.get_submodule(site.path))
            site.calls = 0

    def after_forward(self, root: nn.Module, args: tuple, output: Any) -> None:
        for site in self.sites:
            if site.calls == 0:
                raise RuntimeError(
                    f"the blocks {site.where} '{site.path}' did not run: "
                    f"'{site.path}' is not called by the forward of "
                    f'{type(root).__name__}; insert them at a module that is')
            if site.calls > 1:
                raise RuntimeError(
                    f"the blocks {site.where} '{site.path}' ran {site.calls} "
                    f"times in one forward: '{site.path}' is used more than "
                    'once (like the shared relu of a ResNet block); insert '
                    'them at a module that runs once')

    def fill_absent(self, root: nn.Module, state_dict: Dict[str, Any],
                    prefix: str, *args: Any) -> None:
        """A state dict with none of the blocks' keys keeps their values."""
        names = tuple(f'{prefix}{name}.' for name in self.containers)
        if any(key.startswith(names) for key in state_dict):
            return
        for name in self.containers:
            state_dict.update(
                getattr(root, name).state_dict(prefix=f'{prefix}{name}.'))


def _guard_of(root: nn.Module) -> Guard:
    for hook in root._forward_pre_hooks.values():
        if isinstance(getattr(hook, '__self__', None), Guard):
            return hook.__self__
    guard = Guard()
    root.register_forward_pre_hook(guard.before_forward)
    root.register_forward_hook(guard.after_forward)
    root._register_load_state_dict_pre_hook(guard.fill_absent,
                                            with_module=True)
    return guard


# main functions


def parse_entries(option: str,
                  entries: Any) -> List[Tuple[str, str, List[str], dict]]:
    """Validates a list of ``dict(cfg=..., after=... | before=...)``.

    Returns:
        list[tuple]: ``(where, position, patterns, cfg)`` per entry, with
        ``where`` naming the option in errors, e.g. ``"blocks[0]['after']"``.
    """
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f'{option} must be a list of dicts, got {entries!r}')
    parsed = []
    for i, entry in enumerate(entries):
        where = f'{option}[{i}]'
        if not isinstance(entry, dict):
            raise TypeError(
                f'{where} must be a dict with keys {ENTRY_KEYS}, e.g. dict('
                "cfg=dict(type='nonlocal_plugin.NonLocal2D'), before="
                f"'layer3.-1'), got {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f'{where} has unknown keys {unknown}; allowed '
                             f'keys are {ENTRY_KEYS}')
        check_cfg(f"{where}['cfg']", entry.get('cfg'))
        positions = [key for key in ('after', 'before') if key in entry]
        if len(positions) != 1:
            raise ValueError(f"{where} needs exactly one of 'after' and "
                             "'before' (a module path or a list of them), "
                             f'got {positions or "neither"}')
        position = positions[0]
        patterns = entry[position]
        if isinstance(patterns, str):
            patterns = [patterns]
        if (not isinstance(patterns, (list, tuple)) or not patterns
                or not all(isinstance(p, str) for p in patterns)):
            raise TypeError(
                f"{where}['{position}'] must be a module path or a non-empty "
                "list of them, e.g. 'layer3.-2' or ['layer2.1::2', "
                f"'layer3.1::2'], got {entry[position]!r}")
        parsed.append((f"{where}['{position}']", position, list(patterns),
                       entry['cfg']))
    return parsed


def site_names(position: str, path: str) -> Tuple[str, str]:
    """The container and the key prefix of the blocks at a site.

    ``('after', 'layer3.4')`` -> ``('between_layer3', 'after4')``;
    ``('after', 'layer2.0.bn3')`` -> ``('between_layer2_0', 'after_bn3')``;
    ``('before', 'layer1')`` -> ``('between', 'before_layer1')``.
    """
    parent, child = split_path(path)
    container = f"between_{parent.replace('.', '_')}" if parent else 'between'
    entry = (f'{position}{child}'
             if child.isdigit() else f'{position}_{child}')
    return container, entry


def _canonical(root: nn.Module, position: str, path: str, module: nn.Module,
               where: str) -> Tuple[str, str, nn.Module]:
    """``before`` an element of a plain Sequential is ``after`` the element
    before it: one place, one hook and one key, however it is written."""
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        raise ValueError(
            f"{where} names '{path}', a {type(module).__name__}, which is "
            f'never called itself; insert {position} one of its elements, '
            f"e.g. '{path}.0'")
    if position == 'before':
        parent_path = split_path(path)[0]
        parent = root.get_submodule(parent_path) if parent_path else root
        previous = neighbour(root, path, -1)
        if is_plain_chain(parent) and previous is not None:
            return ('after', ) + previous
    return position, path, module


def _channels(what: str, position: str, path: str, module: nn.Module,
              cfg: dict) -> int:
    """The block's ``in_channels``: declared by the module, or given."""
    declared = (output_channels(module)
                if position == 'after' else input_channels(module))
    given = cfg.get('in_channels')
    if given is not None and (not isinstance(given, int)
                              or isinstance(given, bool) or given <= 0):
        raise TypeError(f"{what}: cfg['in_channels'] must be a positive int, "
                        f'got {given!r}')
    if declared is None and given is None:
        raise ValueError(
            f'{what}: cannot infer in_channels: {type(module).__name__} '
            'declares no channel count (no out_channels, no ResNet-block '
            'norm, not a norm layer or a Sequential ending in one), and '
            'finding it would need running the model. Give it in the '
            f"block's cfg, e.g. dict(type={cfg['type']!r}, in_channels=256)")
    if declared is not None and given is not None and given != declared:
        verb = 'outputs' if position == 'after' else 'takes'
        raise ValueError(
            f"{what}: cfg['in_channels']={given}, but '{path}' {verb} "
            f'{declared} channels; the block would change the shape of the '
            'feature map. Leave in_channels out to infer it')
    return declared if given is None else given


def attach_blocks(backbone: nn.Module,
                  entries: Sequence[dict],
                  *,
                  with_cp: Optional[bool] = None,
                  option: str = 'blocks') -> List[str]:
    """Inserts blocks into a built backbone, in place.

    Args:
        backbone (nn.Module): The backbone; its modules are not changed.
        entries (list[dict]): ``dict(cfg=..., after=...)`` or
            ``dict(cfg=..., before=...)``: the block's config (its
            ``in_channels`` is inferred; an optional ``postfix`` is appended
            to its name) and one module-path pattern or a list of them (see
            :mod:`._paths`). Blocks at one place run in list order.
        with_cp (bool, optional): Checkpoint the blocks' activations. None
            follows the backbone's ``with_cp``. Default: None.
        option (str): How the caller names ``entries`` in errors.

    Returns:
        list[str]: The blocks' state-dict prefixes, in the order inserted.

    Raises:
        ValueError: A pattern matches nothing, ``in_channels`` cannot be
            inferred, or a block would change the feature map's shape.
    """
    parsed = parse_entries(option, entries)
    if isinstance(backbone, nn.Sequential):
        raise TypeError('the backbone is a Sequential, which would call the '
                        'containers of the inserted blocks as layers; wrap it '
                        'in a module of its own')
    if with_cp is None:
        with_cp = bool(getattr(backbone, 'with_cp', False))
    plan = []  # every site first, so that no pattern sees a new container
    for where, position, patterns, cfg in parsed:
        for pattern in patterns:
            for path, module in match_modules(
                    backbone, pattern, where=where, skip=(InsertedBlocks, )):
                plan.append((where, ) + _canonical(backbone, position, path,
                                                   module, where) + (cfg, ))
    if not plan:
        return []
    # Some backbones (mmdet's Swin) freeze their stages in train() only.
    backbone.train(backbone.training)
    frozen = {path: _is_frozen(backbone, path) for _, _, path, _, _ in plan}
    guard = _guard_of(backbone)
    sites = {(site.where, site.path): site for site in guard.sites}
    inserted = []
    for where, position, path, module, cfg in plan:
        what = f"the block {position} '{path}' ({where})"
        channels = _channels(what, position, path, module, cfg)
        name, block = build_block(cfg, channels)
        check_shape(block, channels, f'{what}, {type(block).__name__}')
        container_name, entry = site_names(position, path)
        container = getattr(backbone, container_name, None)
        if container is None:
            container = InsertedBlocks()
            backbone.add_module(container_name, container)
            guard.containers.append(container_name)
        elif not isinstance(container, InsertedBlocks):
            raise ValueError(f'{what}: the backbone already has an attribute '
                             f'{container_name!r} ({type(container)})')
        key = f'{entry}_{name}'
        if key in container:
            raise ValueError(f'{what}: two blocks named {name!r} at one place '
                             f"({container_name}.{key}); give them distinct "
                             "cfg['postfix']")
        container[key] = block
        if frozen[path]:
            block.requires_grad_(False)
            block.eval()
            container.frozen.append(key)
        site = sites.get((position, path))
        if site is None:
            site = SiteHook(container, [], path, position, with_cp)
            site.attach(module)
            guard.sites.append(site)
            sites[(position, path)] = site
        site.keys.append(key)
        inserted.append(f'{container_name}.{key}')
    backbone.train(backbone.training)  # norm_eval and frozen blocks
    return inserted
