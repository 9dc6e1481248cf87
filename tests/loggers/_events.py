"""Read TensorBoard event files back the way TensorBoard does (EventAccumulator)."""

from __future__ import annotations

import pytest

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

_KEEP_ALL = {"scalars": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}


def load(log_dir) -> event_accumulator.EventAccumulator:
    ea = event_accumulator.EventAccumulator(str(log_dir), size_guidance=_KEEP_ALL)
    ea.Reload()
    return ea


def scalars(ea, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def hparams_plugin(ea):
    """The HParams plugin records of a run, decoded: (start info, experiment)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    return start, experiment
