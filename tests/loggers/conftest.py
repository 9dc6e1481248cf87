"""Trainers here write run directories and checkpoints: keep them in a temporary cwd."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
