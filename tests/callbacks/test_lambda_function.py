"""LambdaCallback: any hook as a keyword."""

from __future__ import annotations

import pytest

from ember.callbacks import Callback, LambdaCallback
from ember.callbacks.lambda_function import HOOK_NAMES
from tests.callbacks.fakes import fake_trainer, run_fit


def test_every_hook_is_accepted():
    assert {
        "on_train_batch_end",
        "setup",
        "teardown",
        "on_exception",
        "on_save_checkpoint",
        "on_before_optimizer_step",
        "on_predict_epoch_end",
    } <= HOOK_NAMES
    assert "state_dict" not in HOOK_NAMES and "load_state_dict" not in HOOK_NAMES
    cb = LambdaCallback(**{name: (lambda *a: None) for name in HOOK_NAMES})
    assert isinstance(cb, Callback)


def test_hooks_are_called_with_their_arguments():
    calls = []
    cb = LambdaCallback(
        on_train_epoch_start=lambda t, m: calls.append(("epoch", t.current_epoch)),
        on_train_batch_end=lambda t, m, out, batch, i: calls.append(("batch", i)),
        on_fit_end=lambda t, m: calls.append(("end",)),
        on_validation_start=None,  # None means "not given"
    )
    run_fit(fake_trainer(max_epochs=2, num_training_batches=2), cb)
    assert calls == [
        ("epoch", 0),
        ("batch", 0),
        ("batch", 1),
        ("epoch", 1),
        ("batch", 0),
        ("batch", 1),
        ("end",),
    ]


def test_unknown_hook_and_non_callable():
    with pytest.raises(TypeError, match="'on_trian_start' is not a callback hook"):
        LambdaCallback(on_trian_start=lambda t, m: None)
    with pytest.raises(TypeError, match="on_fit_start must be callable"):
        LambdaCallback(on_fit_start=3)
