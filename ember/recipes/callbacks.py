"""``TextSamples``: every N validations, let a language model write from a prompt, and show the
text in TensorBoard's Text tab and on the console (rank 0 only).

Sampling uses its own NumPy generator (seeded by ``seed`` and the global step), so it never
moves Ember's random streams: a run with samples trains exactly as a run without.
"""

from __future__ import annotations

import numpy as np

from ember.callbacks import Callback

FAST_DEV_RUN_TOKENS = 32  # a fast_dev_run only checks that sampling works


class TextSamples(Callback):
    """Args:
    every_n_validations: sample after every N-th validation run (sanity checks excluded).
    prompt: the text to continue; its characters must be in the model's vocabulary.
    max_new_tokens, temperature, top_k: as ``ember-generate``'s.
    seed: the sampling generator's seed (combined with the global step).
    tag: the TensorBoard text tag.

    The module must have ``sample_text(prompt, max_new_tokens, temperature, top_k, rng)``
    (``GPTModule`` does).
    """

    def __init__(
        self,
        every_n_validations: int = 1,
        prompt: str = "\n",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int = 0,
        tag: str = "samples",
    ) -> None:
        if not isinstance(every_n_validations, int) or every_n_validations < 1:
            raise ValueError(
                f"TextSamples: every_n_validations must be an int >= 1, got {every_n_validations!r}"
            )
        self.every_n_validations = every_n_validations
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_k = top_k
        self.seed = int(seed)
        self.tag = tag
        self.validations = 0
        self.last_text: str | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        due = self.validations % self.every_n_validations == 0
        if not trainer.is_global_zero or not (due or trainer.fast_dev_run):
            return
        tokens = self.max_new_tokens
        if trainer.fast_dev_run:  # sample at its one validation, briefly
            tokens = min(tokens, FAST_DEV_RUN_TOKENS)
        step = trainer.global_step
        rng = np.random.default_rng([self.seed, step])
        text = pl_module.sample_text(self.prompt, tokens, self.temperature, self.top_k, rng)
        self.last_text = text
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):
                # indented four spaces: TensorBoard renders text as markdown; this keeps it verbatim
                block = "\n".join("    " + line for line in text.split("\n"))
                logger.log_text(self.tag, block, step=step)
        print(f"\n--- sample at step {step} ---\n{text}\n---", flush=True)

    def state_dict(self) -> dict:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.validations = int(state_dict.get("validations", 0))
