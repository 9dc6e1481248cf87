"""Shared pieces of the recipe tests: composing the packaged configs, and running the console
scripts in a subprocess (from a temporary directory, with the environment the MPI tests use)."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys

from tests.distributed.mpirun import child_env

EXPERIMENTS = sorted(
    p.stem
    for p in (
        pathlib.Path(__file__).resolve().parents[2] / "ember" / "recipes" / "configs" / "experiment"
    ).glob("*.yaml")
)

# experiments whose data must be on the machine (tinyshakespeare, MNIST: $EMBER_DATA_DIR)
NEEDS_DATA = ("gpt_shakespeare", "gpt_shakespeare_baby", "cnn_mnist")


@contextlib.contextmanager
def hydra_initialized():
    from hydra import initialize_config_module

    with initialize_config_module("ember.recipes.configs", version_base="1.3", job_name="train"):
        yield


def compose(overrides, output_dir) -> object:
    """The ``train`` config for ``overrides``, with ``output_dir`` (Hydra's run directory when
    launched from the shell) set to a test directory."""
    from hydra import compose as hydra_compose

    with hydra_initialized():
        return hydra_compose("train", overrides=[*overrides, f"output_dir={output_dir}"])


def cli_env(data_dir=None) -> dict:
    env = child_env()
    if data_dir is not None:
        env["EMBER_DATA_DIR"] = str(data_dir)
    return env


def run_cli(module: str, args, cwd, timeout: float = 180.0, env=None):
    """``python -m ember.recipes.<module> args...`` in ``cwd``; the completed process."""
    return subprocess.run(
        [sys.executable, "-m", f"ember.recipes.{module}", *args],
        cwd=str(cwd),
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run_dir(root) -> pathlib.Path:
    """The one run directory under ``root/outputs/<name>/`` (fails if there are several)."""
    dirs = [p for p in pathlib.Path(root, "outputs").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def tiny_gpt_overrides() -> list:
    """The default experiment shrunk to a few seconds: 6 steps, 2 validations, a short sample."""
    return [
        "model.n_layer=1",
        "model.n_embd=32",
        "data.batch_size=4",
        "data.block_size=16",
        "data.val_windows=8",
        "data.max_chars=200000",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar=null",
        "callbacks.text_samples.every_n_validations=1",
        "callbacks.text_samples.max_new_tokens=12",
        "scheduler.warmup_steps=2",
    ]


def output(proc) -> str:
    return f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
