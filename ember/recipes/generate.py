"""``ember-generate`` (also ``python -m ember.recipes.generate``): sample text from a GPT
checkpoint written by ``ember-train``.

    ember-generate ckpt_path=outputs/gpt_pysource/<time>/checkpoints/last.ckpt prompt="def "
    ember-generate ckpt_path=outputs/gpt_pysource/<time> temperature=0.5 top_k=10 num_samples=3

Arguments are Hydra overrides of the packaged ``generate.yaml`` (checked up front, with "did you
mean" for a misspelled key). The checkpoint holds the model's hyperparameters and vocabulary,
so nothing else is needed. Writes nothing.
"""

from __future__ import annotations

import os
import sys

import numpy as np

CONFIG_NAME = "generate"


def find_checkpoint(path: str) -> str:
    """A checkpoint file, or a run directory's ``checkpoints/last.ckpt`` (else its newest)."""
    path = os.path.expanduser(str(path))
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for folder in (os.path.join(path, "checkpoints"), path):
            last = os.path.join(folder, "last.ckpt")
            if os.path.isfile(last):
                return last
            if os.path.isdir(folder):
                found = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".ckpt")]
                if found:
                    return max(found, key=os.path.getmtime)
        raise FileNotFoundError(f"ember-generate: no .ckpt file in {path} or {path}/checkpoints")
    raise FileNotFoundError(f"ember-generate: ckpt_path {path} does not exist")


def generate(cfg) -> list:
    """The samples ``cfg`` asks for (a list of strings)."""
    from ember.recipes.models.gpt import GPTModule

    if cfg.temperature < 0:
        raise ValueError(f"ember-generate: temperature must be >= 0, got {cfg.temperature}")
    if cfg.top_k is not None and int(cfg.top_k) < 1:
        raise ValueError(f"ember-generate: top_k must be >= 1 or null, got {cfg.top_k}")
    path = find_checkpoint(cfg.ckpt_path)
    try:
        model = GPTModule.load_from_checkpoint(path)
    except TypeError as exc:
        raise ValueError(
            f"ember-generate: {path} is not a GPT checkpoint from ember-train ({exc})"
        ) from None
    rng = np.random.default_rng(int(cfg.seed))
    top_k = None if cfg.top_k is None else int(cfg.top_k)
    return [
        model.sample_text(
            str(cfg.prompt), int(cfg.max_new_tokens), float(cfg.temperature), top_k, rng
        )
        for _ in range(int(cfg.num_samples))
    ]


def main(argv: list | None = None) -> None:
    """The console script."""
    from ember.recipes.checks import UsageError, check_command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        cfg = check_command_line(CONFIG_NAME, argv, job_name="generate")
        samples = generate(cfg)
    except (UsageError, FileNotFoundError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1} ---")
        print(text)


if __name__ == "__main__":
    main()
