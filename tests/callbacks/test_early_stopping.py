"""EarlyStopping: Lightning's stopping scenarios (patience, min_delta, thresholds, non-finite
values), strictness, where the check runs, rank agreement and resume through state_dict."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from ember.distributed.strategy import SingleDeviceStrategy
from tests.callbacks.fakes import fake_trainer, run_fit
from tests.trainer.helpers import QUIET, ToyModel, loader


class Script(Callback):
    """Logs ``values[current_epoch]`` under ``key`` at each validation epoch end (placed
    before the callback under test, like a module's ``self.log``)."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.callback_metrics[self.key] = float(self.values[trainer.current_epoch])


def fit(values, es, *, key="val_loss", epochs=None, **trainer_kw):
    """Run the fake fit; returns the trainer (current_epoch = the last epoch that ran)."""
    trainer = fake_trainer(state=SimpleNamespace(fn="fit"), num_training_batches=2, **trainer_kw)
    es.setup(trainer, None, "fit")
    run_fit(trainer, [Script(key, values), es], epochs=epochs or len(values))
    return trainer


# Lightning's test_early_stopping_patience table: (values, patience, epoch where it stops)
@pytest.mark.parametrize(
    "values, patience, stop_epoch",
    [
        ([6, 5, 5, 5, 5, 5], 3, 4),
        ([6, 5, 4, 4, 3, 3], 1, 3),
        ([6, 5, 6, 5, 5, 5], 3, 4),
    ],
)
def test_patience(values, patience, stop_epoch):
    es = EarlyStopping("val_loss", patience=patience)
    trainer = fit(values + [0] * 4, es)
    assert trainer.should_stop and trainer.current_epoch == stop_epoch
    assert es.stopped_epoch == stop_epoch
    assert es.wait_count == patience
    assert es.best_score == min(values[: stop_epoch + 1])
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert es.stopping_reason == "patience_exhausted"
    assert es.stopping_reason_message == (
        f"Monitored metric val_loss did not improve in the last {patience} records. "
        f"Best score: {es.best_score:.3f}. Signaling Trainer to stop."
    )


def test_never_stops_while_improving():
    es = EarlyStopping("val_loss", patience=1)
    trainer = fit([5, 4, 3, 2, 1], es)
    assert not trainer.should_stop and trainer.current_epoch == 4
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    assert es.stopping_reason_message is None and es.stopped_epoch == 0
    assert es.best_score == 1.0 and es.wait_count == 0


def test_min_delta_counts_small_gains_as_no_improvement():
    # improvements: 10 -> 9 (1.0 > 0.5) counts; 9 -> 8.7 and 8.7 -> 8.6 do not (<= 0.5)
    es = EarlyStopping("val_loss", min_delta=0.5, patience=2)
    trainer = fit([10, 9, 8.7, 8.6, 1, 1], es)
    assert trainer.current_epoch == 3 and es.best_score == 9.0
    # a gain of exactly min_delta is not an improvement either (strict comparison)
    es = EarlyStopping("val_loss", min_delta=1.0, patience=1)
    assert fit([10, 9, 8, 7], es).current_epoch == 1
    # min_delta's sign is irrelevant
    assert EarlyStopping("m", min_delta=-0.5).min_delta == -0.5
    assert EarlyStopping("m", min_delta=-0.5, mode="max").min_delta == 0.5


def test_mode_max():
    es = EarlyStopping("val_acc", mode="max", patience=2)
    trainer = fit([0.1, 0.5, 0.4, 0.5, 0.9], es, key="val_acc")
    assert trainer.current_epoch == 3 and es.best_score == 0.5


# Lightning's test_early_stopping_thresholds table
@pytest.mark.parametrize(
    "stop, diverge, values, stop_epoch, reason",
    [
        (None, None, [8, 4, 2, 3, 4, 5, 8, 10], 5, "patience_exhausted"),
        (2.9, None, [9, 8, 7, 6, 5, 6, 4, 3, 2, 1], 8, "stopping_threshold"),
        (None, 15.9, [9, 4, 2, 16, 32, 64], 3, "divergence_threshold"),
    ],
)
def test_thresholds(stop, diverge, values, stop_epoch, reason):
    es = EarlyStopping("abc", stopping_threshold=stop, divergence_threshold=diverge)
    trainer = fit(values, es, key="abc")
    assert trainer.current_epoch == stop_epoch and es.stopped_epoch == stop_epoch
    assert es.stopping_reason == reason


def test_threshold_messages_and_mode_max_thresholds():
    es = EarlyStopping("acc", mode="max", stopping_threshold=0.9, divergence_threshold=0.1)
    fit([0.5, 0.95], es, key="acc")
    assert es.stopping_reason_message == (
        "Stopping threshold reached: acc = 0.95 > 0.9. Signaling Trainer to stop."
    )
    es = EarlyStopping("acc", mode="max", stopping_threshold=0.9, divergence_threshold=0.1)
    fit([0.5, 0.05], es, key="acc")
    assert es.stopping_reason == "divergence_threshold"
    assert es.stopping_reason_message == (
        "Divergence threshold reached: acc = 0.05 > 0.1. Signaling Trainer to stop."
    )


@pytest.mark.parametrize("bad", [math.inf, math.nan, -math.inf])
def test_non_finite_metric_stops(bad):
    es = EarlyStopping("val_loss", check_finite=True)
    trainer = fit([4, 3, bad, 2, 1], es)
    assert trainer.current_epoch == 2 and es.stopped_epoch == 2
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    assert es.stopping_reason_message.startswith(
        f"Monitored metric val_loss = {bad} is not finite. Previous best value was 3.000."
    )
    assert es.best_score == 3.0


def test_non_finite_ignored_without_check_finite():
    es = EarlyStopping("val_loss", check_finite=False, patience=3)
    trainer = fit([4, 3, math.nan, 2, 1], es)
    assert not trainer.should_stop and es.best_score == 1.0


def test_strict_missing_monitor_lists_available_keys():
    es = EarlyStopping("val_los")
    with pytest.raises(RuntimeError) as info:
        fit([1, 2], es)
    assert str(info.value) == (
        "Early stopping conditioned on metric `val_los` which is not available. Pass in or "
        "modify your `EarlyStopping` callback to use any of the following: `val_loss`"
    )


def test_not_strict_missing_monitor_is_skipped():
    es = EarlyStopping("val_los", strict=False, patience=0)
    assert not fit([1, 2, 3], es).should_stop
    es = EarlyStopping("val_los", strict=False, verbose=True)
    with pytest.warns(UserWarning, match="val_los"):
        fit([1], es)


def test_where_the_check_runs():
    # once per epoch with validation at the epoch end: at the train epoch end
    trainer = fake_trainer(val_check_interval=1.0, check_val_every_n_epoch=1)
    es = EarlyStopping("m")
    es.setup(trainer, None, "fit")
    assert es._check_on_train_epoch_end is True
    for kw in (
        {"val_check_interval": 0.5},
        {"val_check_interval": 5},
        {"check_val_every_n_epoch": 2},
        {"check_val_every_n_epoch": None},
    ):
        es = EarlyStopping("m")
        es.setup(fake_trainer(**kw), None, "fit")
        assert es._check_on_train_epoch_end is False, kw
    es = EarlyStopping("m", check_on_train_epoch_end=False)
    es.setup(fake_trainer(), None, "fit")
    assert es._check_on_train_epoch_end is False
    # the check really happens in the chosen hook
    trainer = fake_trainer(state=SimpleNamespace(fn="fit"), callback_metrics={"m": 1.0})
    es = EarlyStopping("m", check_on_train_epoch_end=False)
    es.on_train_epoch_end(trainer, None)
    assert es.best_score == math.inf
    es.on_validation_end(trainer, None)
    assert es.best_score == 1.0
    es = EarlyStopping("m", check_on_train_epoch_end=True)
    es.on_validation_end(trainer, None)
    assert es.best_score == math.inf
    es.on_train_epoch_end(trainer, None)
    assert es.best_score == 1.0


def test_patience_counts_validation_checks_not_epochs():
    """Validation twice per epoch: patience 2 runs out in the second epoch."""
    trainer = fake_trainer(state=SimpleNamespace(fn="fit"), val_check_interval=0.5)
    es = EarlyStopping("val_loss", patience=2)
    es.setup(trainer, None, "fit")
    checks = [(0, 5.0), (0, 4.0), (1, 4.5), (1, 4.2)]
    for epoch, value in checks:
        trainer.current_epoch = epoch
        trainer.callback_metrics["val_loss"] = value
        es.on_validation_end(trainer, None)
        es.on_train_epoch_end(trainer, None)  # not counted
    assert trainer.should_stop and es.stopped_epoch == 1 and es.wait_count == 2


def test_skipped_in_sanity_check_other_stages_and_fast_dev_run():
    es = EarlyStopping("m", patience=0, check_on_train_epoch_end=False)
    metrics = {"m": 1.0}
    for kw in (
        {"sanity_checking": True},
        {"state": SimpleNamespace(fn="validate")},
        {"fast_dev_run": 1},
    ):
        trainer = fake_trainer(callback_metrics=metrics, **kw)
        es.on_validation_end(trainer, None)
        assert es.best_score == math.inf and not trainer.should_stop


def test_sanity_check_through_the_driver():
    es = EarlyStopping("val_loss", patience=1)
    trainer = fake_trainer(
        state=SimpleNamespace(fn="fit"), num_training_batches=2, callback_metrics={"val_loss": 0.0}
    )
    es.setup(trainer, None, "fit")
    hits = []

    class Spy(Callback):
        def on_sanity_check_end(self, trainer, pl_module):
            hits.append(es.best_score)

    run_fit(trainer, [Script("val_loss", [3, 2, 1]), es, Spy()], epochs=3, sanity=True)
    assert hits == [math.inf] and es.best_score == 1.0


class AnyRankStops(SingleDeviceStrategy):
    """A rank whose peers decided to stop: reduce_boolean_decision(all=False) -> True."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def reduce_boolean_decision(self, decision, all=True):
        self.calls.append((decision, all))
        return True


def test_any_rank_stopping_stops_every_rank():
    strategy = AnyRankStops()
    trainer = fake_trainer(
        state=SimpleNamespace(fn="fit"), strategy=strategy, callback_metrics={"val_loss": 1.0}
    )
    es = EarlyStopping("val_loss", check_on_train_epoch_end=True)
    es.on_train_epoch_end(trainer, None)
    assert strategy.calls == [(False, False)]  # this rank improved; the decision is "any"
    assert trainer.should_stop and es.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    assert es.stopping_reason_message == "Another process signalled the Trainer to stop."


def test_should_stop_is_never_reset():
    trainer = fake_trainer(
        state=SimpleNamespace(fn="fit"), callback_metrics={"m": 1.0}, should_stop=True
    )
    EarlyStopping("m", check_on_train_epoch_end=True).on_train_epoch_end(trainer, None)
    assert trainer.should_stop is True


def test_verbose_messages(capsys):
    es = EarlyStopping("val_loss", patience=1, verbose=True, min_delta=0.1)
    fit([5, 4, 4], es)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Metric val_loss improved. New best score: 5.000",
        "Metric val_loss improved by 1.000 >= min_delta = 0.1. New best score: 4.000",
        "Monitored metric val_loss did not improve in the last 1 records. Best score: 4.000. "
        "Signaling Trainer to stop.",
    ]


def test_log_rank_zero_only(capsys):
    class Rank1(SingleDeviceStrategy):
        global_rank = 1
        world_size = 2

    trainer = fake_trainer(
        strategy=Rank1(), state=SimpleNamespace(fn="fit"), callback_metrics={"m": 1.0}
    )
    EarlyStopping("m", verbose=True, check_on_train_epoch_end=True).on_train_epoch_end(
        trainer, None
    )
    assert capsys.readouterr().out == "[rank: 1] Metric m improved. New best score: 1.000\n"
    EarlyStopping(
        "m", verbose=True, check_on_train_epoch_end=True, log_rank_zero_only=True
    ).on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == ""


def test_state_round_trip_is_json_and_resume_keeps_patience():
    """Stop-and-resume gives the same stop as one uninterrupted run."""
    values = [6, 5, 6, 5.5, 5.2, 5.1, 1]
    whole = EarlyStopping("val_loss", patience=3)
    assert fit(values, whole).current_epoch == 4  # 6, 5.5, 5.2: three checks > 5

    first = EarlyStopping("val_loss", patience=3)
    trainer = fake_trainer(state=SimpleNamespace(fn="fit"), num_training_batches=2)
    first.setup(trainer, None, "fit")
    run_fit(trainer, [Script("val_loss", values), first], epochs=3)  # epochs 0..2
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    assert state == {
        "wait_count": 1,
        "stopped_epoch": 0,
        "best_score": 5.0,
        "patience": 3,
        "stopping_reason": "not_stopped",
        "stopping_reason_message": None,
    }

    resumed = EarlyStopping("val_loss", patience=10)  # the checkpoint's patience wins
    resumed.load_state_dict(state)
    resumed.setup(trainer, None, "fit")
    shifted = Script("val_loss", values)
    for epoch in range(3, len(values)):
        trainer.current_epoch = epoch
        shifted.on_validation_epoch_end(trainer, None)
        resumed.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            break
    assert trainer.current_epoch == 4 and resumed.stopped_epoch == 4
    assert resumed.state_dict() == whole.state_dict()


def test_state_with_infinite_best_score_is_strict_json():
    es = EarlyStopping("m", mode="max")
    state = json.loads(json.dumps(es.state_dict(), allow_nan=False))
    assert state["best_score"] == "-inf"
    other = EarlyStopping("m", mode="max")
    other.load_state_dict(state)
    assert other.best_score == -math.inf


def test_state_key_and_arguments():
    assert EarlyStopping("a").state_key != EarlyStopping("b").state_key
    assert EarlyStopping("a").state_key != EarlyStopping("a", mode="max").state_key
    assert EarlyStopping("a").state_key == EarlyStopping("a", patience=9).state_key
    with pytest.raises(ValueError, match="`mode` can be min, max"):
        EarlyStopping("a", mode="avg")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("a", patience=-1)
    assert str(EarlyStoppingReason.PATIENCE_EXHAUSTED) == "patience_exhausted"


# ---------------------------------------------------------------- with the real Trainer
class Scripted(ToyModel):
    """Logs a scripted validation value per epoch (Lightning's ModelOverrideValidationReturn)."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values, self.key = values, key

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log(self.key, float(self.values[self.current_epoch]))


def real_fit(tmp_path, values, es, max_epochs=10, **kw):
    from ember.trainer import Trainer

    args = {
        **QUIET,
        "max_epochs": max_epochs,
        "num_sanity_val_steps": 0,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "default_root_dir": str(tmp_path),
    }
    args.update(kw)
    trainer = Trainer(callbacks=[es], **args)
    trainer.fit(Scripted(values), loader(n=8), loader(n=4))
    return trainer


@pytest.mark.parametrize(
    "values, patience, stop_epoch",
    [
        ([6, 5, 5, 5, 5, 5], 3, 4),
        ([6, 5, 4, 4, 3, 3], 1, 3),
        ([6, 5, 6, 5, 5, 5], 3, 4),
    ],
)
def test_trainer_patience(tmp_path, values, patience, stop_epoch):
    es = EarlyStopping("val_loss", patience=patience)
    trainer = real_fit(tmp_path, values + [0] * 4, es)
    assert trainer.current_epoch - 1 == stop_epoch and es.stopped_epoch == stop_epoch
    assert es.stopping_reason == "patience_exhausted"
    assert trainer.early_stopping_callback is es


def test_trainer_non_finite_and_min_epochs(tmp_path):
    es = EarlyStopping("val_loss")
    trainer = real_fit(tmp_path, [4, 3, math.nan, 2, 1], es)
    assert trainer.current_epoch - 1 == 2 and es.stopping_reason == "non_finite_metric"
    # min_epochs: the Trainer keeps going although the callback asked to stop
    es = EarlyStopping("val_loss", patience=1)
    trainer = real_fit(tmp_path, [1, 2, 3, 4, 5, 6], es, min_epochs=4)
    assert trainer.current_epoch == 4


def test_trainer_strict_error_lists_logged_keys(tmp_path):
    es = EarlyStopping("val_los")
    with pytest.raises(RuntimeError, match="use any of the following: `train_loss`, `val_loss`$"):
        real_fit(tmp_path, [1, 2, 3], es)


def test_trainer_checks_after_each_validation_with_val_check_interval(tmp_path):
    """Two validations per epoch (val_check_interval=0.5): patience runs out mid-run."""

    class TwicePerEpoch(Scripted):
        def on_validation_epoch_end(self):
            self.log("val_loss", float(self.values.pop(0)))

    from ember.trainer import Trainer

    es = EarlyStopping("val_loss", patience=2)
    trainer = Trainer(
        callbacks=[es],
        **{
            **QUIET,
            "max_epochs": 5,
            "num_sanity_val_steps": 0,
            "limit_train_batches": 4,
            "limit_val_batches": 1,
            "val_check_interval": 0.5,
            "default_root_dir": str(tmp_path),
        },
    )
    trainer.fit(TwicePerEpoch([5, 4, 4.5, 4.2, 1, 1, 1, 1, 1, 1]), loader(n=16), loader(n=4))
    assert es._check_on_train_epoch_end is False
    assert es.stopped_epoch == 1 and trainer.current_epoch == 2
    assert trainer.global_step == 8  # stopped right after the 4th validation
