"""``ember-train`` (also ``python -m ember.recipes.train``): train a packaged recipe from the shell.

    ember-train                                   # the default: experiment=gpt_pysource
    ember-train experiment=gpt_shakespeare_baby trainer.max_steps=500 optimizer.lr=3e-4
    ember-train -m optimizer.lr=1e-3,3e-4         # a sweep: one run per value
    mpiexec -n 4 ember-train experiment=cnn_mnist # data parallel; one run directory
    ember-train --config-dir ./my_configs experiment=mine

The command line goes through ``hydra.main`` with the configs packaged in
``ember.recipes.configs``. Before Hydra starts, the overrides are composed once to catch typos
("did you mean") and unset required values, and under mpiexec the ranks agree on one run
directory (``rundir.py``).
"""

from __future__ import annotations

import sys

from ember.recipes import CONFIG_MODULE

CONFIG_NAME = "train"

# Hydra flags that print or install something instead of running a job: passed straight on.
_INFO_FLAGS = ("help", "hydra_help", "version", "cfg", "info", "shell_completion")


def _task(cfg):
    from ember.recipes.runner import final_metric, run

    return final_metric(run(cfg))


def parse(argv: list):
    """Hydra's own argument parser (the flags ``hydra.main`` accepts; hydra._internal, with
    hydra-core pinned to 1.3.x)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def _search_path_of(config_path: str) -> str:
    """``-cp`` as hydra.main resolves it for ``_task``: relative to this file under
    ``python -m ember.recipes.train``, to the ``ember.recipes`` package under the console
    script; absolute paths and ``pkg://`` as they are."""
    from hydra._internal.utils import (
        compute_search_path_dir,
        detect_calling_file_or_module_from_task_function,
        validate_config_path,
    )

    from ember.recipes.checks import UsageError

    try:
        validate_config_path(config_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(_task)
    return compute_search_path_dir(calling_file, calling_module, config_path)


def prepare(argv: list) -> list:
    """The command line Hydra should see, after the up-front checks (UsageError on a problem)."""
    from ember.recipes.checks import check_command_line
    from ember.recipes.rundir import agree_on_run_dir, launcher_size, refuse_multirun

    args = parse(argv)
    if any(getattr(args, flag, None) for flag in _INFO_FLAGS):
        return argv
    name = args.config_name or CONFIG_NAME
    multirun = bool(args.multirun) or any(
        o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in args.overrides
    )
    if multirun:
        refuse_multirun(launcher_size())
    config_path = None if args.config_path is None else _search_path_of(args.config_path)
    source = {"config_dir": args.config_dir, "config_path": config_path}
    check_command_line(name, args.overrides, multirun=multirun, **source)
    if multirun:
        return argv
    given = set(args.overrides)
    flags = [a for a in argv if a not in given]
    return flags + agree_on_run_dir(name, args.overrides, **source)


def main(argv: list | None = None) -> None:
    """The console script."""
    import hydra

    from ember.recipes.checks import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = prepare(argv)
    except UsageError as exc:
        from ember.distributed.comm import launch_env

        env = launch_env()
        if env is None or env["rank"] == 0:  # one message per job, not one per rank
            print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)(
        _task
    )()


if __name__ == "__main__":
    main()
