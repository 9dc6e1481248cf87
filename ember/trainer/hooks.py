"""Calling hooks: callbacks first, then the module (Lightning's order), with the module's
``_current_fx_name`` set so that ``self.log`` knows which hook it is called from."""

from __future__ import annotations

# Callbacks that read metrics at epoch end. Lightning runs their ``on_train_epoch_end`` after
# the module's, so that they can monitor a key the module logs in that hook.
_MONITORING = ("ModelCheckpoint", "EarlyStopping", "Checkpoint")


def is_monitoring_callback(callback) -> bool:
    return any(cls.__name__ in _MONITORING for cls in type(callback).__mro__)


class _FxName:
    """Set ``module._current_fx_name`` for the duration of a hook (hooks nest)."""

    __slots__ = ("module", "name", "prev")

    def __init__(self, module, name: str):
        self.module, self.name = module, name

    def __enter__(self):
        d = self.module.__dict__ if self.module is not None else None
        self.prev = d.get("_current_fx_name") if d is not None else None
        if d is not None:
            d["_current_fx_name"] = self.name

    def __exit__(self, *exc):
        if self.module is not None:
            self.module.__dict__["_current_fx_name"] = self.prev
        return False


def call_callback_hooks(
    trainer, hook: str, *args, monitoring: bool | None = None, **kwargs
) -> None:
    """``callback.<hook>(trainer, module, *args)`` for every callback that has the hook;
    ``monitoring`` selects only (or all but) the metric-monitoring callbacks."""
    module = trainer.lightning_module
    with _FxName(module, hook):
        for callback in trainer.callbacks:
            if monitoring is not None and is_monitoring_callback(callback) != monitoring:
                continue
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(trainer, module, *args, **kwargs)


# The hooks that run the model: they run inside the precision plugin's forward context
# (autocast for the mixed precisions), with their inputs converted for the "-true" ones.
_STEP_HOOKS = frozenset(("training_step", "validation_step", "test_step", "predict_step"))


def call_module_hook(trainer, hook: str, *args, **kwargs):
    """``module.<hook>(*args)``; returns what the hook returns (None when absent)."""
    module = trainer.lightning_module
    fn = getattr(module, hook, None)
    if fn is None:
        return None
    with _FxName(module, hook):
        if hook in _STEP_HOOKS:
            plugin = getattr(trainer, "precision_plugin", None)
            if plugin is not None and plugin.active:
                args, kwargs = plugin.convert_input((args, kwargs))
                with plugin.forward_context():
                    return fn(*args, **kwargs)
        return fn(*args, **kwargs)


def call_datamodule_hook(trainer, hook: str, *args, **kwargs):
    datamodule = trainer.datamodule
    fn = getattr(datamodule, hook, None) if datamodule is not None else None
    if fn is None:
        return None
    with _FxName(trainer.lightning_module, hook):
        return fn(*args, **kwargs)


def call_hooks(trainer, hook: str, *args, **kwargs) -> None:
    """The usual pair: every callback's hook, then the module's."""
    call_callback_hooks(trainer, hook, *args, **kwargs)
    call_module_hook(trainer, hook, *args, **kwargs)


def is_overridden(name: str, instance, parent: type) -> bool:
    """True when ``type(instance)`` (or the instance itself) redefines ``parent.<name>``."""
    if instance is None:
        return False
    if name in getattr(instance, "__dict__", {}):
        return True  # patched on the instance (tests, LambdaCallback-style)
    mine = getattr(type(instance), name, None)
    base = getattr(parent, name, None)
    if mine is None:
        return False
    if base is None:
        return True
    return getattr(mine, "__code__", mine) is not getattr(base, "__code__", base)
