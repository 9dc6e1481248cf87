"""Forward hooks for Modules: handles, the global (every-module) registries, and the hooked
call path, kept out of ``Module.__call__`` so a module without hooks pays one check."""

from __future__ import annotations

import warnings

# Hooks that run for every module (``register_module_forward_hook`` and friends). These dicts
# are mutated in place, never rebound, so importing them by name is safe.
global_forward_pre_hooks: dict = {}
global_forward_hooks: dict = {}
global_forward_hooks_with_kwargs: set = set()
global_forward_hooks_always_called: set = set()


class RemovableHandle:
    """What ``register_*_hook`` returns: ``handle.remove()`` (or ``with handle:``) unhooks."""

    _next_id = 0

    def __init__(self, hooks_dict: dict, *extra: set):
        self.hooks_dict = hooks_dict
        self.extra = extra
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self.hooks_dict.pop(self.id, None)
        for s in self.extra:
            s.discard(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def add_hook(hooks: dict, hook, prepend: bool, *extra: set) -> RemovableHandle:
    """Store ``hook`` under a fresh id (first when ``prepend``); ``extra`` are the flag sets
    the id must also leave on removal."""
    handle = RemovableHandle(hooks, *extra)
    if prepend:
        rest = dict(hooks)
        hooks.clear()
        hooks[handle.id] = hook
        hooks.update(rest)
    else:
        hooks[handle.id] = hook
    return handle


def register_module_forward_pre_hook(hook) -> RemovableHandle:
    """A forward pre-hook run before every module's own pre-hooks."""
    return add_hook(global_forward_pre_hooks, hook, False)


def register_module_forward_hook(
    hook, *, with_kwargs: bool = False, always_call: bool = False
) -> RemovableHandle:
    """A forward hook run before every module's own forward hooks."""
    handle = add_hook(
        global_forward_hooks,
        hook,
        False,
        global_forward_hooks_with_kwargs,
        global_forward_hooks_always_called,
    )
    if with_kwargs:
        global_forward_hooks_with_kwargs.add(handle.id)
    if always_call:
        global_forward_hooks_always_called.add(handle.id)
    return handle


def call_with_hooks(module, args: tuple, kwargs: dict):
    """``module.forward`` wrapped in its (and the global) pre-hooks and hooks, in torch's
    order; ``always_call`` hooks still run when anything in between raises."""
    result = None
    called = set()
    try:
        for hook_id, hook in (
            *global_forward_pre_hooks.items(),
            *module._forward_pre_hooks.items(),
        ):
            if hook_id in module._forward_pre_hooks_with_kwargs:
                out = hook(module, args, kwargs)
                if out is not None:
                    if not (isinstance(out, tuple) and len(out) == 2):
                        raise RuntimeError(
                            "forward pre-hook must return None or a tuple of "
                            f"(new_args, new_kwargs), but got {out}."
                        )
                    args, kwargs = out
            else:
                out = hook(module, args)
                if out is not None:
                    args = out if isinstance(out, tuple) else (out,)
        result = module.forward(*args, **kwargs)
        for hook_id, hook, with_kw, always in _post_hooks(module):
            if always:
                called.add(hook_id)
            out = hook(module, args, kwargs, result) if with_kw else hook(module, args, result)
            if out is not None:
                result = out
        return result
    except Exception:
        for hook_id, hook, with_kw, always in _post_hooks(module):
            if not always or hook_id in called:
                continue
            try:
                out = hook(module, args, kwargs, result) if with_kw else hook(module, args, result)
                if out is not None:
                    result = out
            except Exception as exc:
                warnings.warn(
                    "module forward hook with ``always_call=True`` raised an "
                    "exception that was silenced as another error was raised in "
                    f"forward: {exc}",
                    stacklevel=2,
                )
        raise


def _post_hooks(module):
    for hook_id, hook in tuple(global_forward_hooks.items()):
        yield (
            hook_id,
            hook,
            hook_id in global_forward_hooks_with_kwargs,
            hook_id in global_forward_hooks_always_called,
        )
    for hook_id, hook in tuple(module._forward_hooks.items()):
        yield (
            hook_id,
            hook,
            hook_id in module._forward_hooks_with_kwargs,
            hook_id in module._forward_hooks_always_called,
        )
