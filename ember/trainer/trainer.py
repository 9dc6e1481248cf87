"""``Trainer``: runs a TrainingModule's fit/validate/test/predict with Lightning 2.x's
arguments, hook order and return values. The loops live in fit_loop.py and eval_loop.py,
optimization in optimization.py, ``self.log`` in logging.py."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings

from ember.trainer import checkpoint_state as ckpt
from ember.trainer import preemption
from ember.trainer import setup as args
from ember.trainer.data import limited_batches, request_loaders
from ember.trainer.datamodule import DataModule
from ember.trainer.eval_loop import EvalLoop, print_results, run_predict, sanity_check
from ember.trainer.fit_loop import FitLoop, Progress
from ember.trainer.hooks import (
    call_callback_hooks,
    call_datamodule_hook,
    call_hooks,
    call_module_hook,
    is_overridden,
)
from ember.trainer.logging import LoggerConnector, MetricStore
from ember.trainer.module import TrainingModule
from ember.trainer.optimization import OptimizerProxy, configure_optimizers
from ember.trainer.precision import Precision
from ember.trainer.properties import TrainerProperties

_STAGE_OF_FN = {
    "fit": "fitting",
    "validate": "validating",
    "test": "testing",
    "predict": "predicting",
}


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class TrainerState:
    """``fn`` (fit/validate/test/predict), ``stage`` and ``status`` of the trainer."""

    __slots__ = ("fn", "stage", "status")

    def __init__(self):
        self.fn, self.stage, self.status = None, None, "initializing"

    def __repr__(self) -> str:
        return f"TrainerState(fn={self.fn!r}, stage={self.stage!r}, status={self.status!r})"


class Trainer(TrainerProperties):
    """Lightning-style trainer. ``Trainer(max_epochs=3).fit(model, train_loader, val_loader)``.

    Arguments follow Lightning 2.x: length (max_epochs, min_epochs, max_steps, min_steps,
    max_time), limits (limit_*_batches: int count or fraction; overfit_batches), validation
    (val_check_interval, check_val_every_n_epoch, num_sanity_val_steps), gradients
    (accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm), output (logger,
    callbacks, log_every_n_steps, enable_progress_bar, enable_model_summary,
    enable_checkpointing, default_root_dir), debugging (fast_dev_run, detect_anomaly,
    deterministic) and hardware (accelerator, devices, strategy, precision).

    Ember adds ``on_nonfinite_loss``: what a NaN/inf loss from ``training_step`` does:
    "raise" (default: stop with an error naming the step), "skip" (no backward and no update
    for that batch, with a warning), "warn", or None (no check; it costs one device sync per
    step on a GPU).
    """

    def __init__(
        self,
        *,
        accelerator="auto",
        strategy="auto",
        devices="auto",
        num_nodes: int = 1,
        precision=None,
        logger=None,
        callbacks=None,
        fast_dev_run=False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time=None,
        limit_train_batches=None,
        limit_val_batches=None,
        limit_test_batches=None,
        limit_predict_batches=None,
        overfit_batches=0.0,
        val_check_interval=None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val=None,
        gradient_clip_algorithm=None,
        deterministic=None,
        benchmark=None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        detect_anomaly: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir=None,
        on_nonfinite_loss: str | None = "raise",
    ):
        if num_nodes != 1:
            raise ValueError(
                f"Trainer(num_nodes={num_nodes}): multi-node runs are launched "
                "with mpiexec and a distributed strategy; keep num_nodes=1"
            )
        self.precision = args.parse_precision(precision)
        self.strategy = args.resolve_strategy(strategy, args.resolve_device(accelerator, devices))
        self.precision_plugin = Precision(self.precision, self.strategy.root_device.type)
        self.max_time = args.parse_max_time(max_time)
        self.max_steps = args.non_negative_int(max_steps, "max_steps", -1)
        if max_epochs is None:  # Lightning's rule
            max_epochs = 1000 if self.max_steps == -1 and self.max_time is None else -1
        self.max_epochs = args.non_negative_int(max_epochs, "max_epochs", -1)
        self.min_epochs = args.non_negative_int(min_epochs, "min_epochs", allow_none=True)
        self.min_steps = args.non_negative_int(min_steps, "min_steps", allow_none=True)
        self.limit_train_batches = args.batch_limit(limit_train_batches, "limit_train_batches")
        self.limit_val_batches = args.batch_limit(limit_val_batches, "limit_val_batches")
        self.limit_test_batches = args.batch_limit(limit_test_batches, "limit_test_batches")
        self.limit_predict_batches = args.batch_limit(
            limit_predict_batches, "limit_predict_batches"
        )
        self.overfit_batches = args.batch_limit(overfit_batches, "overfit_batches")
        self.val_check_interval = args.batch_limit(val_check_interval, "val_check_interval")
        self.check_val_every_n_epoch = args.non_negative_int(
            check_val_every_n_epoch, "check_val_every_n_epoch", 1, allow_none=True
        )
        if (
            check_val_every_n_epoch is None
            and isinstance(self.val_check_interval, float)
            and val_check_interval is not None
        ):
            raise ValueError(
                "Trainer(check_val_every_n_epoch=None) counts batches across "
                "epochs, so val_check_interval must be an int"
            )
        self.num_sanity_val_steps = args.non_negative_int(
            2 if num_sanity_val_steps is None else num_sanity_val_steps, "num_sanity_val_steps", -1
        )
        self.log_every_n_steps = args.non_negative_int(
            50 if log_every_n_steps is None else log_every_n_steps, "log_every_n_steps"
        )
        self.accumulate_grad_batches = args.non_negative_int(
            accumulate_grad_batches, "accumulate_grad_batches", 1
        )
        self.gradient_clip_val, self.gradient_clip_algorithm = args.parse_clip(
            gradient_clip_val, gradient_clip_algorithm
        )
        # every CPU op is already deterministic; on CUDA it picks the sorted embedding backward
        # over the atomic one (process-wide, as torch.use_deterministic_algorithms is)
        self.deterministic = deterministic
        if deterministic:
            from ember.cuda.embedding import set_deterministic

            set_deterministic(True)
        self.benchmark = benchmark
        self.inference_mode = inference_mode
        self.use_distributed_sampler = use_distributed_sampler
        self.detect_anomaly = bool(detect_anomaly)
        self.on_nonfinite_loss = args.parse_nonfinite(on_nonfinite_loss)
        self.reload_dataloaders_every_n_epochs = args.non_negative_int(
            reload_dataloaders_every_n_epochs, "reload_dataloaders_every_n_epochs"
        )
        self.enable_progress_bar = True if enable_progress_bar is None else enable_progress_bar
        self.enable_model_summary = True if enable_model_summary is None else enable_model_summary
        self.enable_checkpointing = True if enable_checkpointing is None else enable_checkpointing
        self._default_root_dir = args.root_dir(default_root_dir)
        self.fast_dev_run = args.parse_fast_dev_run(fast_dev_run)
        self.loggers = args.default_loggers(logger, self._default_root_dir)
        if self.overfit_batches > 0:
            self.limit_train_batches = self.limit_val_batches = self.overfit_batches
        if self.fast_dev_run:
            self._apply_fast_dev_run(self.fast_dev_run)
        if callbacks is None:
            callbacks = []
        elif not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]
        self.callbacks = args.default_callbacks(
            callbacks,
            self.enable_progress_bar,
            self.enable_model_summary,
            self.enable_checkpointing and not self.fast_dev_run,
        )

        self.state = TrainerState()
        self.should_stop = False
        self.interrupted = False
        self.lightning_module: TrainingModule | None = None
        self.model = None
        self.datamodule: DataModule | None = None
        self.optimizers: list = []
        self.lr_scheduler_configs: list = []
        self._optimizer_proxies: list = []
        self._progress = Progress()
        self._metrics = MetricStore()
        self._logger_connector = LoggerConnector(self)
        self._fit_loop = FitLoop(self)
        self._val_loop = EvalLoop(self, "validate")
        self._test_loop = EvalLoop(self, "test")
        self._predict_num_batches: list = []
        self._predict_loaders: list | None = None
        self._fit_val_source = None
        self._warned_no_val_step = False
        self._setup_done = False
        self.ckpt_path: str | None = None  # the checkpoint the last run resumed from
        self._ckpt_path_arg = None
        self.received_sigterm = False
        self._sigterm_installed = False

    def _apply_fast_dev_run(self, n: int) -> None:
        """Lightning's fast_dev_run: n batches of each kind, one epoch, no sanity check, no
        loggers and no checkpoints (nothing is written)."""
        if not self.overfit_batches:
            self.limit_train_batches = self.limit_val_batches = n
        self.limit_test_batches = self.limit_predict_batches = n
        self.max_steps, self.max_epochs = n, 1
        self.num_sanity_val_steps = 0
        self.val_check_interval, self.check_val_every_n_epoch = 1.0, 1
        self.loggers = []

    # ------------------------------------------------------------- entry points
    def fit(
        self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None
    ) -> None:
        """Train ``model``. Data comes from the dataloaders, a DataModule, or the model's
        ``train_dataloader``/``val_dataloader``. Ctrl-C ends training gracefully."""
        if isinstance(train_dataloaders, DataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (
            train_dataloaders is not None or val_dataloaders is not None
        ):
            raise ValueError("Trainer.fit: pass either dataloaders or a datamodule, not both")
        self._check_ckpt_path(ckpt_path, "fit")
        return self._launch(model, "fit", datamodule, (train_dataloaders, val_dataloaders))

    def validate(
        self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None
    ) -> list[dict]:
        """One pass over the validation data; returns a dict of logged metrics per
        dataloader."""
        return self._evaluate("validate", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(
        self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None
    ) -> list[dict]:
        """One pass over the test data; returns a dict of logged metrics per dataloader."""
        return self._evaluate("test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(
        self,
        model=None,
        dataloaders=None,
        datamodule=None,
        return_predictions: bool | None = None,
        ckpt_path=None,
    ):
        """The outputs of ``predict_step`` for every batch (a list per dataloader when there
        are several)."""
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        self._check_ckpt_path(ckpt_path, "predict")
        keep = True if return_predictions is None else bool(return_predictions)
        return self._launch(model, "predict", datamodule, (dataloaders, keep))

    def _evaluate(self, fn, model, dataloaders, ckpt_path, verbose, datamodule):
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        if dataloaders is not None and datamodule is not None:
            raise ValueError(f"Trainer.{fn}: pass either dataloaders or a datamodule, not both")
        self._check_ckpt_path(ckpt_path, fn)
        return self._launch(model, fn, datamodule, (dataloaders, verbose))

    def save_checkpoint(self, filepath, weights_only: bool = False, storage_options=None) -> None:
        """Write the full training state (or only the model and hyperparameters with
        ``weights_only``) to ``filepath``: one safetensors file, written atomically by rank
        0. Every rank must call it at the same point. See checkpoint_state.py."""
        if storage_options is not None:
            raise TypeError(
                "Trainer.save_checkpoint: storage_options is not supported (Ember "
                "writes local files)"
            )
        ckpt.save_checkpoint(self, filepath, weights_only)

    def _check_ckpt_path(self, ckpt_path, fn: str) -> None:
        if ckpt_path is not None and ckpt_path not in ("last", "best"):
            try:
                ckpt_path = os.fspath(ckpt_path)
            except TypeError:
                raise TypeError(
                    f"Trainer.{fn}(ckpt_path=...): expected a path, 'last' or "
                    f"'best', got {type(ckpt_path).__name__}"
                ) from None
        self._ckpt_path_arg = ckpt_path

    def _at_loop_boundary(self) -> None:
        """The fit loop is between batches or epochs: save and stop after a SIGTERM."""
        preemption.check_preemption(self)

    # ----------------------------------------------------------------- running
    def _launch(self, model, fn: str, datamodule, data):
        if model is None:
            model = self.lightning_module
            if model is None:
                raise ValueError(f"Trainer.{fn}: pass a model (no model from a previous run)")
        if not isinstance(model, TrainingModule):
            raise TypeError(f"Trainer.{fn}: expected a TrainingModule, got {type(model).__name__}")
        if datamodule is not None and not isinstance(datamodule, DataModule):
            raise TypeError(
                f"Trainer.{fn}: datamodule must be a DataModule, got {type(datamodule).__name__}"
            )
        self.state.fn, self.state.status = fn, "running"
        self.should_stop = self.interrupted = False
        self.lightning_module, self.datamodule = model, datamodule
        handler = preemption.SigtermHandler(self) if fn == "fit" else contextlib.nullcontext()
        try:
            with handler:
                result = self._run(fn, data)
        except preemption.Preempted as exc:
            if self.is_global_zero:
                print(
                    f"\nReceived SIGTERM: saved a checkpoint to {exc.path}; stopping training",
                    file=sys.stderr,
                )
            self._cleanup_after(exc, "interrupted")
            return None
        except KeyboardInterrupt as exc:
            if self.is_global_zero:
                print("\nDetected KeyboardInterrupt, shutting down gracefully...", file=sys.stderr)
            self._cleanup_after(exc, "interrupted")
            return None
        except BaseException as exc:
            self._cleanup_after(exc, "failed")
            raise
        self.state.status, self.state.stage = "finished", None
        return result

    def _cleanup_after(self, exc: BaseException, status: str) -> None:
        """on_exception, teardown and logger finalisation, without masking ``exc``; a second
        Ctrl-C during this cleanup is ignored."""
        with _sigint_ignored():
            self._cleanup_steps(exc, status)

    def _cleanup_steps(self, exc: BaseException, status: str) -> None:
        self.state.status, self.interrupted = "interrupted", True
        steps = [
            lambda: call_callback_hooks(self, "on_exception", exc),
            lambda: call_datamodule_hook(self, "on_exception", exc),
        ]
        if self._setup_done:
            steps.append(lambda: self._teardown_hooks(self.state.fn))
        steps += [self.strategy.teardown, lambda: self._logger_connector.finalize(status)]
        for step in steps:
            try:
                step()
            except Exception as cleanup_exc:  # keep going; the original error matters
                warnings.warn(
                    f"Trainer: error during cleanup after {type(exc).__name__}: {cleanup_exc!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._logger_connector.results = None
        self.state.stage = None

    def _run(self, fn: str, data):
        module = self.lightning_module
        self._setup_done = False
        self._verify(fn)
        module.trainer = self
        if self.datamodule is not None:
            self.datamodule.trainer = self
        self._attach_model_callbacks()
        self._prepare_data()
        self.strategy.barrier("pre_setup")
        call_datamodule_hook(self, "setup", stage=fn)
        call_callback_hooks(self, "setup", stage=fn)
        call_module_hook(self, "setup", stage=fn)
        self._setup_done = True
        self.strategy.barrier("post_setup")
        args.share_log_versions(self)
        call_module_hook(self, "configure_model")
        module.to(self.strategy.root_device)
        self.precision_plugin.convert_module(module)  # the "-true" precisions
        restorer = self._restorer(fn)
        self.model = self.strategy.setup_module(module)
        self._logger_connector.reset()
        if fn == "fit":
            self._fit_loop.source, self._fit_loop.train_loader = data[0], None
            self._setup_optimizers()
            call_hooks(self, "on_fit_start")
            if restorer is not None:
                restorer.restore_training_state()
        self._logger_connector.log_hyperparams()
        result = self._run_stage(fn, data)
        if fn == "fit":
            call_hooks(self, "on_fit_end")
        self._teardown_hooks(fn)
        self.strategy.teardown()
        self._logger_connector.finalize("success")
        return result

    def _restorer(self, fn: str):
        """Resolve ``ckpt_path`` (after setup: callbacks know their directories) and restore
        the module (and, for fit, the callbacks) from it."""
        self._fit_loop.resume = None
        path = ckpt.resolve_ckpt_path(self, self._ckpt_path_arg, fn)
        self.ckpt_path = path
        if path is None:
            return None
        restorer = ckpt.Restorer(self, path)
        restorer.restore_module()
        if fn == "fit":
            restorer.restore_callbacks()
        return restorer

    def _verify(self, fn: str) -> None:
        module = self.lightning_module
        if fn == "fit":
            for hook in ("training_step", "configure_optimizers"):
                if not is_overridden(hook, module, TrainingModule):
                    raise NotImplementedError(
                        f"Trainer.fit: {type(module).__name__} does not define {hook}()"
                    )
            if not module.automatic_optimization:
                if self.accumulate_grad_batches != 1:
                    raise ValueError(
                        "accumulate_grad_batches is not supported with manual "
                        "optimization; accumulate in training_step yourself"
                    )
                if self.gradient_clip_val:
                    raise ValueError(
                        "gradient_clip_val is not supported with manual "
                        "optimization; call self.clip_gradients(opt, ...) in "
                        "training_step"
                    )
        elif fn in ("validate", "test"):
            step = "validation_step" if fn == "validate" else "test_step"
            if not is_overridden(step, module, TrainingModule):
                raise NotImplementedError(
                    f"Trainer.{fn}: {type(module).__name__} does not define {step}()"
                )

    def _attach_model_callbacks(self) -> None:
        """configure_callbacks(): the model's callbacks replace Trainer callbacks of the same
        type, and checkpoint callbacks go last."""
        extra = call_module_hook(self, "configure_callbacks") or []
        if not isinstance(extra, (list, tuple)):
            extra = [extra]
        if not extra:
            return
        types = {type(cb) for cb in extra}
        kept = [cb for cb in self.callbacks if type(cb) not in types]
        self.callbacks = args.order_callbacks(kept + list(extra))

    def _prepare_data(self) -> None:
        module, dm = self.lightning_module, self.datamodule
        for obj, call in ((dm, call_datamodule_hook), (module, call_module_hook)):
            if obj is None:
                continue
            per_node = getattr(obj, "prepare_data_per_node", True)
            if (self.local_rank == 0) if per_node else self.is_global_zero:
                call(self, "prepare_data")
        self.strategy.barrier("prepare_data")

    def _setup_optimizers(self) -> None:
        optimizers, configs = configure_optimizers(self)
        if len(optimizers) > 1 and self.lightning_module.automatic_optimization:
            raise ValueError(
                f"configure_optimizers returned {len(optimizers)} optimizers: training with "
                "several optimizers needs manual optimization (set self.automatic_optimization "
                "= False and step them in training_step via self.optimizers())"
            )
        self.optimizers, self.lr_scheduler_configs = optimizers, configs
        self._optimizer_proxies = [OptimizerProxy(o, self) for o in optimizers]

    def _teardown_hooks(self, fn: str) -> None:
        call_datamodule_hook(self, "teardown", stage=fn)
        call_callback_hooks(self, "teardown", stage=fn)
        call_module_hook(self, "teardown", stage=fn)
        self._setup_done = False

    def _run_stage(self, fn: str, data):
        self.state.stage = _STAGE_OF_FN[fn]
        if fn == "fit":
            val = data[1]
            self._fit_val_source = val
            self._val_loop.loaders = None
            self._warned_no_val_step = False
            sanity_check(self, val)
            self.state.stage = "fitting"
            if self.detect_anomaly:
                from ember.autograd.anomaly import detect_anomaly

                with detect_anomaly():
                    self._fit_loop.run(self._val_loop)
            else:
                self._fit_loop.run(self._val_loop)
            return None
        self.lightning_module.zero_grad()
        if fn == "predict":
            loaders, keep = data
            return self._run_predict(loaders, keep)
        loaders, verbose = data
        loop = self._val_loop if fn == "validate" else self._test_loop
        loop.setup_data(loaders)
        if loop.loaders is None:
            raise ValueError(
                f"Trainer.{fn}: no data; pass dataloaders=, a datamodule=, or "
                f"implement {'val' if fn == 'validate' else 'test'}_dataloader()"
            )
        results = loop.run()
        if verbose and self.is_global_zero:
            print_results(results, fn)
        return results

    def _run_predict(self, loaders, keep: bool):
        loaders = request_loaders(self, "predict", loaders)
        if loaders is None:
            raise ValueError(
                "Trainer.predict: no data; pass dataloaders=, a datamodule=, or "
                "implement predict_dataloader()"
            )
        if self.use_distributed_sampler:
            loaders = [self.strategy.process_dataloader(dl, "predict") for dl in loaders]
        self._predict_loaders = loaders
        self._predict_num_batches = [
            limited_batches(dl, self.limit_predict_batches, "predict", "limit_predict_batches")
            for dl in loaders
        ]
        return run_predict(self, loaders, self._predict_num_batches, keep)

    def _validation_enabled(self) -> bool:
        loop = self._val_loop
        return (
            loop.has_data
            and self.limit_val_batches != 0
            and is_overridden("validation_step", self.lightning_module, TrainingModule)
        )

    def _validation_possible(self) -> bool:
        """Validation data is defined (without asking for it yet), the module has a
        validation_step and limit_val_batches is not 0."""
        module = self.lightning_module
        has_step = is_overridden("validation_step", module, TrainingModule)
        defined = self._fit_val_source is not None or any(
            is_overridden("val_dataloader", obj, base)
            for obj, base in ((self.datamodule, DataModule), (module, TrainingModule))
        )
        if defined and not has_step and not self._warned_no_val_step:
            self._warned_no_val_step = True
            warnings.warn(
                "Validation data was given but the module has no validation_step; "
                "skipping validation",
                UserWarning,
                stacklevel=4,
            )
        return defined and has_step and self.limit_val_batches != 0
