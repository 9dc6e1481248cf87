"""The ``save_dir/name/version_N`` run layout, shared by the TensorBoard and CSV loggers.

One implementation of version discovery, path checks and the rank-0-only experiment, so the
two loggers cannot drift apart. Nothing here creates a directory on a rank other than 0.
"""

from __future__ import annotations

import os

from ember.loggers.logger import Logger, global_rank

_VERSION_PREFIX = "version_"


def version_dir_name(version: int | str) -> str:
    """A string version is the directory name itself; an int N is ``version_N``."""
    return version if isinstance(version, str) else f"{_VERSION_PREFIX}{version}"


def _file_in_path(path: str) -> str | None:
    """The first existing component of ``path`` that is not a directory, or None."""
    path = os.path.abspath(path)
    probe = path
    while True:
        if os.path.exists(probe):
            return None if os.path.isdir(probe) else probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


def check_dir_path(path: str, owner: str) -> None:
    """Fail early, naming the path, when a log directory cannot exist because a file is in the
    way (e.g. ``save_dir`` is a file)."""
    blocker = _file_in_path(path)
    if blocker is not None:
        raise NotADirectoryError(
            f"{owner}: cannot use log directory '{path}': '{blocker}' is a file, not a directory"
        )


def make_log_dir(path: str, owner: str) -> str:
    """Create ``path`` (and parents); errors name the path."""
    check_dir_path(path, owner)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"{owner}: cannot create log directory '{path}': {exc.strerror or exc}"
        ) from exc
    return path


def next_version(root_dir: str, owner: str) -> int:
    """One past the largest ``version_<int>`` directory in ``root_dir`` (0 when none)."""
    check_dir_path(root_dir, owner)
    try:
        entries = os.listdir(root_dir)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise OSError(f"{owner}: cannot list '{root_dir}': {exc.strerror or exc}") from exc
    found = [
        int(entry[len(_VERSION_PREFIX) :])
        for entry in entries
        if entry.startswith(_VERSION_PREFIX)
        and entry[len(_VERSION_PREFIX) :].isdigit()
        and os.path.isdir(os.path.join(root_dir, entry))
    ]
    return max(found) + 1 if found else 0


class _DummyExperiment:
    """What non-zero ranks get for ``logger.experiment``: every call does nothing."""

    def __getattr__(self, name):
        return self._nop

    def _nop(self, *args, **kwargs):
        return None

    def __bool__(self) -> bool:
        return False


DUMMY_EXPERIMENT = _DummyExperiment()


class VersionedLogger(Logger):
    """Base for loggers that write under ``save_dir/name/version``.

    ``version`` is resolved lazily (first use of ``version`` / ``log_dir``) by scanning the
    existing ``version_*`` directories, so constructing a logger writes nothing.
    """

    def __init__(
        self,
        save_dir,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        sub_dir: str | None = None,
    ):
        owner = type(self).__name__
        if save_dir is None:
            raise TypeError(f"{owner}: save_dir must be a path, got None")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, (int, str))
        ):
            raise TypeError(
                f"{owner}: version must be an int, a str or None, got {type(version).__name__}"
            )
        self._save_dir = os.path.expanduser(os.path.expandvars(os.fspath(save_dir)))
        self._name = name or ""
        self._version = version
        self._sub_dir = os.fspath(sub_dir) if sub_dir is not None else None
        self._experiment = None
        check_dir_path(self.root_dir, owner)

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def name(self) -> str:
        return self._name

    @property
    def root_dir(self) -> str:
        """``save_dir/name`` (just ``save_dir`` when name is empty)."""
        return os.path.join(self._save_dir, self._name) if self._name else self._save_dir

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(self.root_dir, type(self).__name__)
        return self._version

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """``root_dir/version_N`` (plus ``sub_dir`` when given): where this run's files go."""
        log_dir = os.path.join(self.root_dir, version_dir_name(self.version))
        if self._sub_dir:
            log_dir = os.path.join(log_dir, self._sub_dir)
        return log_dir

    @property
    def experiment(self):
        """The underlying writer, created on first use on rank 0; other ranks get a no-op."""
        if global_rank() != 0:
            return DUMMY_EXPERIMENT
        if self._experiment is None:
            self._experiment = self._create_experiment()
        return self._experiment

    def _create_experiment(self):
        raise NotImplementedError
