"""``run(cfg)``: build a recipe's data, model, callbacks, loggers and Trainer from a composed
config, train, and report. ``ember-train`` calls it from its Hydra task; tests call it with a
config from Hydra's Compose API.

Only rank 0 prints and writes; every rank builds and trains the same objects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import numpy as np

from ember.callbacks import Callback

log = logging.getLogger("ember.recipes")


def emit(message: str) -> None:
    """To Hydra's job log (console + <run dir>/train.log) when Hydra configured logging,
    otherwise to stdout."""
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, flush=True)


def world():
    """The job's communicator (a trivial one outside an MPI launcher)."""
    from ember.distributed.comm import world as _world

    return _world()


def _built(node):
    """Instantiate every entry of a dict-like config that has a ``_target_`` (null entries and
    entries without a target are skipped)."""
    from hydra.utils import instantiate

    out = []
    for value in (node or {}).values():
        if value is not None and "_target_" in value:
            out.append(instantiate(value, _convert_="all"))
    return out


def build(cfg) -> dict:
    """The objects a run needs: datamodule, model, callbacks, loggers, trainer."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    optimizer = instantiate(cfg.optimizer, _convert_="all")
    sched_cfg = cfg.get("scheduler")
    scheduler = None
    if sched_cfg is not None and "_target_" in sched_cfg:
        scheduler = instantiate(sched_cfg, _convert_="all")
    model = instantiate(
        cfg.model,
        _convert_="all",
        optimizer=optimizer,
        scheduler=scheduler,
        **datamodule.model_kwargs(),
    )
    callbacks = _built(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false wins
        callbacks = [
            cb for cb in callbacks if not any("ProgressBar" in c.__name__ for c in type(cb).__mro__)
        ]
    loggers = _built(cfg.get("logger"))
    trainer = instantiate(
        cfg.trainer,
        _convert_="all",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(cfg.output_dir),
    )
    if not trainer.loggers:  # logger=none or fast_dev_run: the LR monitor has nowhere to write
        trainer.callbacks = [
            cb for cb in trainer.callbacks if type(cb).__name__ != "LearningRateMonitor"
        ]
    return {
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }


def weights_digest(module) -> str:
    """sha256 over the parameters (names and bytes): equal on every rank of a healthy DDP run.
    Buffers are left out: BatchNorm's running statistics are synchronised at the start of each
    forward, so after the last one they legitimately differ between ranks."""
    h = hashlib.sha256()
    for name, param in module.named_parameters():
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(param.detach())).tobytes())
    return h.hexdigest()


def hparams_of(cfg) -> dict:
    """The run's choices for TensorBoard's HParams tab: model, data, optimizer, scheduler and
    trainer values plus the seed, flattened (``optimizer.lr``); Hydra keys and paths left out."""
    from omegaconf import OmegaConf

    out: dict = {"seed": cfg.seed}
    for group in ("model", "data", "optimizer", "scheduler", "trainer"):
        node = cfg.get(group)
        if node is None:
            continue
        plain = OmegaConf.to_container(node, resolve=True)
        for key, value in _flatten(plain, group):
            leaf = key.rsplit(".", 1)[-1]
            if leaf.startswith("_") and leaf != "_target_":
                continue
            out[key] = value
    return out


def _flatten(value, prefix: str):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}")
    elif isinstance(value, (list, tuple)):
        yield prefix, str(list(value))
    else:
        yield prefix, value


class BatchCounter(Callback):
    """Counts the training batches this process runs (a resumed run's earlier batches are not
    in it), for the throughput report."""

    batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


def _checkpoint_callback(trainer):
    for cb in trainer.callbacks:
        if type(cb).__name__ == "ModelCheckpoint":
            return cb
    return None


def _profiled(fn, out_dir: str, enabled: bool):
    if not enabled:
        return fn()
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(40)
        if world().rank == 0:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, "profile.txt")
            with open(path, "w") as f:
                f.write(text.getvalue())
            top = "\n".join(text.getvalue().splitlines()[:30])
            emit(f"profile (cumulative time, top functions; all in {path}):\n{top}")


def run(cfg) -> dict:
    """Train the recipe ``cfg`` describes; returns the summary (also printed on rank 0)."""
    from omegaconf import OmegaConf

    from ember.data import seed_everything

    comm = world()
    zero = comm.rank == 0
    out_dir = os.path.abspath(str(cfg.output_dir))
    if zero:
        emit("config:\n" + OmegaConf.to_yaml(cfg, resolve=True).rstrip())
        emit(f"run directory: {out_dir}")
    seed_everything(int(cfg.seed))
    objs = build(cfg)
    trainer, model, dm = objs["trainer"], objs["model"], objs["datamodule"]
    counter = BatchCounter()
    trainer.callbacks.insert(0, counter)
    start = time.perf_counter()
    _profiled(
        lambda: trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path")),
        out_dir,
        bool(cfg.get("profile")),
    )
    seconds = time.perf_counter() - start
    if trainer.interrupted:
        emit("training was interrupted")
    if cfg.get("test"):
        trainer.test(model, datamodule=dm, verbose=zero)
    summary = _summarise(cfg, trainer, model, dm, seconds, counter.batches, comm)
    if zero:
        _log_hparams(cfg, trainer.loggers, summary)
        _report(summary)
    return summary


def _summarise(cfg, trainer, model, dm, seconds, batches, comm) -> dict:
    metrics = {
        k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if np.isfinite(float(v))
    }
    samples = batches * int(getattr(dm, "batch_size", 0) or 0) * comm.size
    tokens = samples * int(getattr(dm, "tokens_per_sample", 1) or 1)
    digest = weights_digest(model)
    digests = comm.allgather_object(digest) if comm.size > 1 else [digest]
    ckpt = _checkpoint_callback(trainer)
    best_score = getattr(ckpt, "best_model_score", None) if ckpt else None
    summary = {
        "run_dir": os.path.abspath(str(cfg.output_dir)),
        "monitor": str(cfg.monitor),
        "best_score": None if best_score is None else float(best_score),
        "best_model_path": (getattr(ckpt, "best_model_path", "") or None) if ckpt else None,
        "last_model_path": (getattr(ckpt, "last_model_path", "") or None) if ckpt else None,
        "metrics": metrics,
        "global_step": int(trainer.global_step),
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds > 0 else 0.0,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "tokens_per_sample": int(getattr(dm, "tokens_per_sample", 1) or 1),
        "world_size": comm.size,
        "weights_sha256": digest,
        "weights_identical": len(set(digests)) == 1,
        "tensorboard_dir": None,
    }
    for logger in trainer.loggers or []:
        if type(logger).__name__ == "TensorBoardLogger":
            summary["tensorboard_dir"] = _tensorboard_root(summary["run_dir"])
    if not summary["weights_identical"]:
        raise RuntimeError(
            f"ember-train: the final weights differ between ranks ({digests}); data parallel "
            "training went out of sync"
        )
    return summary


def _tensorboard_root(run_dir: str) -> str:
    """The sweep's directory in a multirun (all its runs side by side in the HParams tab),
    else the run directory."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return run_dir
    if str(hc.mode).endswith("MULTIRUN"):
        return os.path.abspath(str(hc.sweep.dir))
    return run_dir


def final_metric(summary: dict):
    """The run's objective: the best monitored value, else its last value."""
    if summary["best_score"] is not None:
        return summary["best_score"]
    return summary["metrics"].get(summary["monitor"])


def _log_hparams(cfg, loggers, summary) -> None:
    """Each run's hyperparameters with its final metrics, for the HParams tab."""
    metric = final_metric(summary)
    if metric is None:
        return
    metrics = {"hp_metric": metric}
    for key in ("val_loss", "val_acc", "train_loss"):
        if key in summary["metrics"]:
            metrics[f"final/{key}"] = summary["metrics"][key]
    for logger in loggers:
        if type(logger).__name__ == "TensorBoardLogger":
            logger.log_hyperparams(hparams_of(cfg), metrics)
            logger.finalize("success")


def _report(s: dict) -> None:
    lines = ["", "=== ember-train: done ==="]
    if s["best_score"] is not None:
        lines.append(f"best {s['monitor']}: {s['best_score']:.4f}")
    shown = {k: v for k, v in s["metrics"].items() if not k.startswith("lr-")}
    if shown:
        lines.append("last metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if s["best_model_path"]:
        lines.append(f"best checkpoint: {s['best_model_path']}")
    if s["last_model_path"]:
        lines.append(f"last checkpoint: {s['last_model_path']}")
    rate = f"{s['samples_per_second']:.1f} samples/s"
    if s["tokens_per_sample"] > 1:
        rate += f" ({s['tokens_per_second']:.0f} tokens/s)"
    ranks = f" on {s['world_size']} ranks" if s["world_size"] > 1 else ""
    lines.append(
        f"wall time: {s['seconds']:.1f} s for {s['global_step']} steps{ranks}; throughput: {rate}"
    )
    if s["world_size"] > 1:
        lines.append(
            f"final weights identical on all {s['world_size']} ranks "
            f"(sha256 {s['weights_sha256'][:16]})"
        )
    lines.append(f"run directory: {s['run_dir']}")
    if s["tensorboard_dir"]:
        lines.append(f"tensorboard --logdir {s['tensorboard_dir']}")
    emit("\n".join(lines))
