"""Optimization: parse ``configure_optimizers``, run one training batch (automatic or manual
optimization, gradient accumulation, clipping) and step the learning-rate schedulers.

Automatic optimization follows Lightning 2.x: ``training_step``, ``zero_grad`` (first batch of
an accumulation window) and ``backward`` run inside a closure that the optimizer's ``step``
calls, so an ``optimizer_step`` override (warmup, LBFGS) sees the same interface as in
Lightning. The loss is divided by ``accumulate_grad_batches``, so k accumulated batches of
size b give the gradient of one batch of size k*b with a mean loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Mapping

from ember.tensor.tensor import Tensor
from ember.trainer.hooks import call_callback_hooks, call_module_hook
from ember.trainer.logging import to_float


@dataclasses.dataclass
class LRSchedulerConfig:
    """One scheduler and when to step it (Lightning's LRSchedulerConfig)."""

    scheduler: object
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True


_CONFIG_KEYS = {f.name for f in dataclasses.fields(LRSchedulerConfig)}
_EXPECTED = (
    "an Optimizer, a list of Optimizers, a pair ([optimizers], [lr_schedulers]), a "
    "dict {'optimizer': ..., 'lr_scheduler': ...} or a list of such dicts"
)


def _class_named(obj, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(obj).__mro__)


def _is_optimizer(obj) -> bool:
    return all(hasattr(obj, a) for a in ("step", "zero_grad", "param_groups")) and not isinstance(
        obj, type
    )


def _is_scheduler(obj) -> bool:
    return hasattr(obj, "step") and hasattr(obj, "optimizer") and not _is_optimizer(obj)


class _NoOptimizer:
    """Stands in when ``configure_optimizers`` returns None (Lightning warns and does the
    same): training_step and backward run, nothing is updated."""

    param_groups: list = []
    state: dict = {}

    def step(self, closure=None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


def _unusable(got) -> TypeError:
    text = repr(got)
    text = text if len(text) < 200 else text[:200] + "..."
    return TypeError(
        f"configure_optimizers returned {type(got).__name__} ({text}); expected {_EXPECTED}"
    )


def parse_optimizers(conf) -> tuple[list, list, str | None]:
    """(optimizers, raw scheduler entries, top-level monitor) from the hook's output."""
    if conf is None:
        warnings.warn(
            "configure_optimizers returned None: this fit runs with no optimizer "
            "(training_step and backward run, no parameter is updated)",
            UserWarning,
            stacklevel=3,
        )
        return [_NoOptimizer()], [], None
    if _is_optimizer(conf):
        return [conf], [], None
    if isinstance(conf, Mapping):
        return _parse_dict(conf, conf)
    if isinstance(conf, (list, tuple)) and conf:
        if (
            len(conf) == 2
            and isinstance(conf[0], (list, tuple))
            or (
                len(conf) == 2
                and _is_optimizer(conf[0])
                and (_is_scheduler(conf[1]) or isinstance(conf[1], (list, tuple, Mapping)))
            )
        ):
            opts, scheds = conf
            opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
            scheds = list(scheds) if isinstance(scheds, (list, tuple)) else [scheds]
            if opts and all(_is_optimizer(o) for o in opts):
                return opts, scheds, None
            raise _unusable(conf)
        if all(isinstance(d, Mapping) for d in conf):
            opts, scheds, monitor = [], [], None
            for d in conf:
                o, s, m = _parse_dict(d, conf)
                opts += o
                scheds += [
                    dict(x, monitor=x.get("monitor", m))
                    if isinstance(x, Mapping)
                    else {"scheduler": x, "monitor": m}
                    for x in s
                ]
            return opts, scheds, monitor
        if all(_is_optimizer(o) for o in conf):
            return list(conf), [], None
    raise _unusable(conf)


def _parse_dict(d: Mapping, whole) -> tuple[list, list, str | None]:
    if "optimizer" not in d:
        raise TypeError(
            f"configure_optimizers returned a dict without an 'optimizer' key "
            f"(keys: {sorted(d)}); expected {_EXPECTED}"
        )
    extra = set(d) - {"optimizer", "lr_scheduler", "monitor"}
    if extra:
        raise TypeError(
            f"configure_optimizers returned a dict with unknown keys "
            f"{sorted(extra)}; allowed: 'optimizer', 'lr_scheduler', 'monitor'"
        )
    if not _is_optimizer(d["optimizer"]):
        raise _unusable(whole)
    scheds = [d["lr_scheduler"]] if d.get("lr_scheduler") is not None else []
    return [d["optimizer"]], scheds, d.get("monitor")


def scheduler_configs(entries: list, monitor: str | None, optimizers: list) -> list:
    """Validate scheduler entries (a scheduler or a dict) into LRSchedulerConfigs."""
    configs = []
    for entry in entries:
        if isinstance(entry, Mapping):
            entry = dict(entry)
            unknown = set(entry) - _CONFIG_KEYS
            if unknown:
                raise ValueError(
                    f"configure_optimizers: unknown keys {sorted(unknown)} in the "
                    f"lr_scheduler dict; allowed: {sorted(_CONFIG_KEYS)}"
                )
            if "scheduler" not in entry:
                raise ValueError(
                    "configure_optimizers: the lr_scheduler dict must have the key "
                    "'scheduler' with an lr scheduler as its value"
                )
            if entry.get("monitor") is None and monitor is not None:
                entry["monitor"] = monitor
        else:
            entry = {"scheduler": entry, "monitor": monitor}
        sched = entry["scheduler"]
        if not _is_scheduler(sched):
            raise TypeError(
                f"configure_optimizers: {type(sched).__name__} is not an lr "
                "scheduler (it needs .step() and .optimizer)"
            )
        if entry.get("interval", "epoch") not in ("step", "epoch"):
            raise ValueError(
                f"configure_optimizers: the lr_scheduler 'interval' must be 'step' "
                f"or 'epoch', got {entry['interval']!r}"
            )
        freq = entry.get("frequency", 1)
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise ValueError(
                f"configure_optimizers: the lr_scheduler 'frequency' must be a "
                f"positive int, got {freq!r}"
            )
        entry.setdefault("reduce_on_plateau", _class_named(sched, "ReduceLROnPlateau"))
        if entry["reduce_on_plateau"] and entry.get("monitor") is None:
            raise ValueError(
                "configure_optimizers: a ReduceLROnPlateau scheduler needs a 'monitor' (the "
                "logged metric it watches), e.g. return {'optimizer': optimizer, "
                "'lr_scheduler': {'scheduler': scheduler, 'monitor': 'val_loss'}}"
            )
        if _class_named(sched, "OneCycleLR") and entry.get("interval", "epoch") == "epoch":
            warnings.warn(
                "A OneCycleLR scheduler is stepped per epoch ('interval': 'epoch'); "
                "did you mean 'interval': 'step'?",
                RuntimeWarning,
                stacklevel=3,
            )
        if not any(sched.optimizer is o for o in optimizers):
            raise ValueError(
                f"configure_optimizers: the {type(sched).__name__} is attached to "
                "an optimizer that configure_optimizers did not return"
            )
        configs.append(LRSchedulerConfig(**entry))
    return configs


def configure_optimizers(trainer) -> tuple[list, list]:
    """Call the hook and validate what it returned."""
    conf = call_module_hook(trainer, "configure_optimizers")
    optimizers, entries, monitor = parse_optimizers(conf)
    return optimizers, scheduler_configs(entries, monitor, optimizers)


class OptimizerProxy:
    """What the module's hooks get as the optimizer (Lightning's LightningOptimizer):
    ``step`` runs ``on_before_optimizer_step`` (and clipping, in automatic optimization) after
    the closure, and counts the global step; everything else goes to the optimizer."""

    def __init__(self, optimizer, trainer):
        self.__dict__["_optimizer"] = optimizer
        self.__dict__["_trainer"] = trainer

    @property
    def optimizer(self):
        return self._optimizer

    def __getattr__(self, name):
        return getattr(self.__dict__["_optimizer"], name)

    def __setattr__(self, name, value):
        setattr(self._optimizer, name, value)

    def __repr__(self) -> str:
        return f"OptimizerProxy({self._optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None, **kwargs):
        """The precision plugin runs the closure, ``after_closure`` and the update; a step
        that "16-mixed" skips (inf/NaN gradients) does not count as a global step."""
        trainer, optimizer = self._trainer, self._optimizer
        out, stepped = trainer.precision_plugin.optimizer_step(
            optimizer, closure, lambda: after_closure(trainer, optimizer), **kwargs
        )
        trainer._skipped_step = not stepped  # the step-interval schedulers wait too
        if stepped:
            trainer._progress.global_step += 1
        return out


def after_closure(trainer, optimizer) -> None:
    """Between backward and the update: ``on_before_optimizer_step``, then clipping."""
    call_callback_hooks(trainer, "on_before_optimizer_step", optimizer)
    call_module_hook(trainer, "on_before_optimizer_step", optimizer)
    if trainer.is_global_zero:  # weight and gradient histograms, while gradients exist
        for lg in trainer.loggers:
            if hasattr(lg, "maybe_log_histograms"):
                lg.maybe_log_histograms(trainer.lightning_module, trainer.global_step)
    if trainer.lightning_module.automatic_optimization:
        call_module_hook(
            trainer,
            "configure_gradient_clipping",
            optimizer,
            gradient_clip_val=trainer.gradient_clip_val,
            gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        )


def clip_gradients(optimizer, clip_val, algorithm: str = "norm") -> None:
    """Clip the gradients of ``optimizer``'s parameters with ember.nn.utils."""
    if clip_val is None or clip_val <= 0:
        return
    from ember.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_

    opt = getattr(optimizer, "optimizer", optimizer)
    params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not params:
        return
    if algorithm == "value":
        clip_grad_value_(params, clip_val)
    elif algorithm == "norm":
        clip_grad_norm_(params, clip_val)
    else:
        raise ValueError(f"gradient_clip_algorithm {algorithm!r} is invalid; use 'norm' or 'value'")


def run_backward(trainer, loss, *args, **kwargs) -> None:
    """``on_before_backward``, ``module.backward(loss)``, ``on_after_backward``."""
    call_callback_hooks(trainer, "on_before_backward", loss)
    call_module_hook(trainer, "on_before_backward", loss)
    plugin = getattr(trainer, "precision_plugin", None)
    scaled = plugin.pre_backward(loss) if plugin is not None else loss  # "16-mixed"
    call_module_hook(trainer, "backward", scaled, *args, **kwargs)
    call_callback_hooks(trainer, "on_after_backward")
    call_module_hook(trainer, "on_after_backward")


def check_loss(trainer, loss: Tensor, batch_idx: int) -> Tensor | None:
    """``Trainer(on_nonfinite_loss=...)``: the loss, or None to skip this batch. The message
    names the epoch, the global step and the batch."""
    mode = getattr(trainer, "on_nonfinite_loss", None)
    if mode is None:
        return loss
    from ember.tensor.backend import get_array_module

    arr = loss.data
    if bool(get_array_module(arr).isfinite(arr).all()):
        return loss
    where = (
        f"at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch_idx "
        f"{batch_idx})"
    )
    text = f"training_step returned a non-finite loss ({float(arr.reshape(-1)[0])}) {where}"
    if mode == "raise":
        raise FloatingPointError(
            f"{text}. Trainer(on_nonfinite_loss='skip') skips such batches, 'warn' only warns"
        )
    if mode == "skip":
        warnings.warn(
            f"{text}: skipping this batch (no backward, no parameter update)",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    warnings.warn(text, RuntimeWarning, stacklevel=4)
    return loss


def _detached(value):
    return value.detach() if isinstance(value, Tensor) else value


def training_loss(output) -> tuple[Tensor | None, dict]:
    """The loss and the ``outputs`` dict from what ``training_step`` returned (automatic
    optimization); bad returns get an error that names training_step."""
    if output is None:
        return None, {}
    if isinstance(output, Tensor):
        loss, extra = output, {}
    elif isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(
                f"training_step returned a dict without a 'loss' key (keys: "
                f"{sorted(map(str, output))}); in automatic optimization the "
                "dict must hold the loss under 'loss'"
            )
        loss = output["loss"]
        extra = {k: _detached(v) for k, v in output.items() if k != "loss"}
        if loss is None:
            return None, extra
    else:
        raise TypeError(
            f"training_step must return a loss Tensor, a dict with a 'loss' key, "
            f"or None to skip the batch; got {type(output).__name__}"
        )
    if not isinstance(loss, Tensor):
        raise TypeError(
            f"training_step: the loss must be an ember Tensor, got {type(loss).__name__}"
        )
    if loss.numel() != 1:
        raise ValueError(
            f"training_step returned a loss of shape {tuple(loss.shape)}; it must "
            "be a scalar (one element): reduce it, e.g. with .mean()"
        )
    if not loss.requires_grad:
        raise RuntimeError(
            "training_step returned a loss that does not require grad: it was "
            "computed under no_grad, from detached tensors, or the model has no "
            "trainable parameters"
        )
    return loss, {"loss": loss.detach(), **extra}


class _Closure:
    """training_step, then zero_grad (first batch of a window), then backward."""

    def __init__(self, trainer, step_args: tuple, batch_idx: int, optimizer, zero_grad: bool):
        self.trainer, self.step_args, self.batch_idx = trainer, step_args, batch_idx
        self.optimizer, self.zero_grad = optimizer, zero_grad
        self.outputs: dict | None = None

    def __call__(self):
        trainer = self.trainer
        output = call_module_hook(trainer, "training_step", *self.step_args)
        loss, self.outputs = training_loss(output)
        # with detect_anomaly, backward first: anomaly mode names the op that made the NaN
        after = trainer.detect_anomaly and trainer.on_nonfinite_loss == "raise"
        if loss is not None and not after:
            loss = check_loss(trainer, loss, self.batch_idx)
        if self.zero_grad:
            call_callback_hooks(trainer, "on_before_zero_grad", self.optimizer)
            call_module_hook(trainer, "on_before_zero_grad", self.optimizer)
            call_module_hook(
                trainer,
                "optimizer_zero_grad",
                trainer.current_epoch,
                self.batch_idx,
                self.optimizer,
            )
        if loss is None:
            return None
        acc = trainer.accumulate_grad_batches
        closure_loss = loss / acc if acc > 1 else loss
        run_backward(trainer, closure_loss)
        if after:
            check_loss(trainer, loss, self.batch_idx)
        return closure_loss


def run_automatic(trainer, step_args: tuple, batch_idx: int, accumulating: bool) -> dict:
    """One training batch under automatic optimization; returns the ``outputs`` dict."""
    proxy = trainer._optimizer_proxies[0]
    optimizer = proxy.optimizer
    closure = _Closure(
        trainer,
        step_args,
        batch_idx,
        optimizer,
        zero_grad=batch_idx % trainer.accumulate_grad_batches == 0,
    )
    if accumulating:  # DDP: no gradient allreduce for the window's micro-batches
        block = getattr(trainer.strategy, "block_backward_sync", None)
        with block() if block is not None else contextlib.nullcontext():
            closure()
    else:
        call_module_hook(
            trainer, "optimizer_step", trainer.current_epoch, batch_idx, proxy, closure
        )
        if closure.outputs is None:
            raise RuntimeError(
                "optimizer_step: the optimizer closure was not run; an "
                "optimizer_step override must call optimizer.step(closure="
                "optimizer_closure) (or optimizer_closure())"
            )
    return closure.outputs


def run_manual(trainer, step_args: tuple) -> dict:
    """One training batch under manual optimization: training_step does everything."""
    output = call_module_hook(trainer, "training_step", *step_args)
    if output is None:
        return {}
    if isinstance(output, Tensor):
        return {"loss": output.detach()}
    if isinstance(output, Mapping):
        return {k: _detached(v) for k, v in output.items()}
    raise TypeError(
        f"training_step (manual optimization) must return a Tensor, a dict or "
        f"None; got {type(output).__name__}"
    )


def update_lr_schedulers(trainer, interval: str, plateau: bool) -> None:
    """Step the schedulers of this ``interval`` whose frequency divides the optimizer step
    (for 'step') or the number of finished epochs (for 'epoch')."""
    module = trainer.lightning_module
    if not trainer.lr_scheduler_configs or not module.automatic_optimization:
        return
    if interval == "step" and getattr(trainer, "_skipped_step", False):
        return  # the optimizer step was skipped (inf/NaN gradients under "16-mixed")
    for config in trainer.lr_scheduler_configs:
        if config.reduce_on_plateau != plateau or config.interval != interval:
            continue
        index = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        if index % config.frequency:
            continue
        metric = None
        if config.reduce_on_plateau:
            value = trainer._metrics.callback.get(config.monitor)
            if value is None:
                logged = sorted(trainer._metrics.callback)
                if config.strict:
                    raise ValueError(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was never "
                        f"logged. Logged keys: {logged}. Log it with self.log, pick one of "
                        "these in the lr_scheduler dict's 'monitor', or set 'strict': False"
                    )
                warnings.warn(
                    f"ReduceLROnPlateau monitors {config.monitor!r}, which is not "
                    f"logged (logged keys: {logged}); skipping this step",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            metric = to_float(value)
        call_module_hook(trainer, "lr_scheduler_step", config.scheduler, metric)
