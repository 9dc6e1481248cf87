"""ModelSummary: the per-layer parameter table printed at the start of fit (Lightning's layout).

``summarize(module, max_depth)`` builds the numbers (``Summary``) without printing, so the Trainer
can use it for ``enable_model_summary`` and tests can check the counts.
"""

from __future__ import annotations

import math

from ember.callbacks.callback import Callback

_UNITS = (" ", "K", "M", "B", "T")


def human_readable_count(number: int) -> str:
    """67 -> '67  ', 1234 -> '1.2 K', 123456 -> '123 K', 3e6 -> '3.0 M' (Lightning's format)."""
    if number < 0:
        raise ValueError(f"human_readable_count: expected a count >= 0, got {number}")
    digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    groups = min(int(math.ceil(digits / 3)), len(_UNITS))
    value = number * 10.0 ** (-3 * (groups - 1))
    index = groups - 1
    if index < 1 or value >= 100:
        return f"{int(value):,d} {_UNITS[index]}"
    return f"{value:,.1f} {_UNITS[index]}"


class LayerSummary:
    """One row of the table: a submodule's name, type, parameter count and mode."""

    __slots__ = ("name", "type", "num_parameters", "training")

    def __init__(self, name: str, module):
        self.name = name
        self.type = type(module).__name__
        self.num_parameters = sum(p.numel() for p in module.parameters())
        self.training = bool(module.training)

    @property
    def mode(self) -> str:
        return "train" if self.training else "eval"


class Summary:
    """The numbers of a model summary; ``str(summary)`` is the printed table.

    ``max_depth``: 0 lists no layers (totals only), 1 the direct children, -1 every layer.
    """

    def __init__(self, module, max_depth: int = 1):
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"summarize: max_depth must be an int >= -1, got {max_depth!r}")
        self.max_depth = max_depth
        if max_depth == 0:
            named = []
        elif max_depth == 1:
            named = list(module.named_children())
        else:
            named = list(module.named_modules())[1:]  # drop the root
            if max_depth > 0:
                named = [(n, m) for n, m in named if n.count(".") < max_depth]
        self.layers = [LayerSummary(n, m) for n, m in named]
        params = list(module.parameters())  # unique: shared weights count once
        self.total_parameters = sum(p.numel() for p in params)
        self.trainable_parameters = sum(p.numel() for p in params if p.requires_grad)
        self.model_size = sum(p.numel() * p.itemsize for p in params) / 1e6
        modes = [m.training for m in module.modules()][1:]
        self.total_training_modes = {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def non_trainable_parameters(self) -> int:
        return self.total_parameters - self.trainable_parameters

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def layer_types(self) -> list[str]:
        return [layer.type for layer in self.layers]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self.layers]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for layer in self.layers]

    def __str__(self) -> str:
        cols = [
            (" ", [str(i) for i in range(len(self.layers))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [human_readable_count(n) for n in self.param_nums]),
            ("Mode", [layer.mode for layer in self.layers]),
        ]
        widths = [max([len(head)] + [len(v) for v in vals]) for head, vals in cols]
        total_width = sum(widths) + 3 * (len(cols) + 1)
        rule = "-" * total_width
        lines = [" | ".join(f"{head:<{w}}" for (head, _), w in zip(cols, widths)), rule]
        for i in range(len(self.layers)):
            lines.append(" | ".join(f"{vals[i]:<{w}}" for (_, vals), w in zip(cols, widths)))
        lines.append(rule)
        totals = [
            (human_readable_count(self.trainable_parameters), "Trainable params"),
            (human_readable_count(self.non_trainable_parameters), "Non-trainable params"),
            (human_readable_count(self.total_parameters), "Total params"),
            (f"{self.model_size:,.3f}", "Total estimated model params size (MB)"),
            (str(self.total_training_modes["train"]), "Modules in train mode"),
            (str(self.total_training_modes["eval"]), "Modules in eval mode"),
        ]
        lines.extend(f"{value:<10}{label}" for value, label in totals)
        return "\n".join(lines)

    __repr__ = __str__


def summarize(module, max_depth: int = 1) -> Summary:
    """The summary of ``module`` down to ``max_depth`` (see ``Summary``)."""
    return Summary(module, max_depth=max_depth)


class ModelSummary(Callback):
    """Prints the model summary on rank 0 when fit starts. ``max_depth=0`` prints nothing."""

    def __init__(self, max_depth: int = 1):
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"ModelSummary: max_depth must be an int >= -1, got {max_depth!r}")
        self._max_depth = max_depth

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._max_depth or not getattr(trainer, "is_global_zero", True):
            return
        print(summarize(pl_module, max_depth=self._max_depth), flush=True)
