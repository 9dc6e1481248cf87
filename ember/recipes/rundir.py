"""One run directory for all ranks of an ``mpiexec`` job.

Hydra names the run directory from the clock (``${now:...}``) when it starts, so ranks started
a second apart would each make their own. Before Hydra runs, rank 0 resolves
``hydra.run.dir`` from the same command line and broadcasts it; every rank then passes it back
to Hydra as an override. Ranks other than 0 also turn off Hydra's ``.hydra/`` output and its log
file, so the directory holds one of each. A ``-m`` sweep under several ranks is refused: each
rank would run the whole sweep.
"""

from __future__ import annotations

import os

from ember.recipes.checks import UsageError, compose


def _quote(value: str) -> str:
    """A Hydra override value that keeps the path verbatim (quoted, quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resolve_run_dir(config_name: str, overrides: list, config_dir=None, config_path=None) -> str:
    """``hydra.run.dir`` as Hydra would resolve it now, made absolute."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(config_name, overrides, config_dir, hydra=True, config_path=config_path)
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(cfg)  # for ${hydra:...} inside the pattern
    try:
        return os.path.abspath(str(cfg.hydra.run.dir))
    finally:
        hydra_config.cfg = previous


def launcher_size() -> int:
    """Ranks of the MPI job this process belongs to (1 without a launcher). Reads the
    launcher's environment; asks MPI only when the environment does not say."""
    from ember.distributed.comm import launch_env

    env = launch_env()
    if env is None:
        return 1
    if env.get("size") is not None:
        return int(env["size"])
    from ember.distributed.comm import world

    return world().size


def refuse_multirun(size: int) -> None:
    if size > 1:
        raise UsageError(
            f"ember-train: a -m/--multirun sweep cannot run under mpiexec with {size} ranks "
            "(every rank would run every job of the sweep). Run the sweep without mpiexec, or "
            "launch one mpiexec job per configuration."
        )


def agree_on_run_dir(config_name: str, overrides: list, config_dir=None, config_path=None) -> list:
    """The overrides every rank passes to Hydra: unchanged for a single process; otherwise
    plus rank 0's run directory (and, on other ranks, no ``.hydra/`` and no log file)."""
    if launcher_size() <= 1:
        return list(overrides)
    from ember.distributed.comm import world

    comm = world()
    if comm.size <= 1:
        return list(overrides)
    run_dir, error = None, None
    if comm.rank == 0:
        try:
            run_dir = resolve_run_dir(config_name, overrides, config_dir, config_path)
        except Exception as exc:  # every rank must leave the broadcast before anyone raises
            error = f"{type(exc).__name__}: {exc}"
    run_dir, error = comm.broadcast_object([run_dir, error])
    if error is not None:
        raise UsageError(f"ember-train: rank 0 could not resolve the run directory: {error}")
    extra = [f"hydra.run.dir={_quote(run_dir)}"]
    if comm.rank != 0:
        extra += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    return list(overrides) + extra
