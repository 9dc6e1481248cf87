"""LambdaCallback: a callback built from plain functions, one keyword per hook."""

from __future__ import annotations

from ember.callbacks.callback import Callback

_NOT_HOOKS = {"state_dict", "load_state_dict", "state_key"}
HOOK_NAMES = frozenset(
    name
    for name, value in vars(Callback).items()
    if callable(value) and not name.startswith("_") and name not in _NOT_HOOKS
)


class LambdaCallback(Callback):
    """``LambdaCallback(on_train_epoch_end=lambda trainer, module: ...)``.

    Each keyword names a Callback hook and gets the same arguments the hook gets.
    """

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if name not in HOOK_NAMES:
                raise TypeError(
                    f"LambdaCallback: {name!r} is not a callback hook; valid hooks: "
                    f"{', '.join(sorted(HOOK_NAMES))}"
                )
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {type(fn).__name__}")
            setattr(self, name, fn)
