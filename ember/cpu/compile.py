"""Load a CPU kernel module on first use, or report that none is available.

Kernel modules (``ember/cpu/_<family>_kernels.py``) import numba at the top and compile their
loops for fixed signatures when imported, from numba's on-disk cache after the first time
(``cache=True``, in ``$NUMBA_CACHE_DIR/ember`` or ``~/.cache/ember/numba``, under a hash of the
sources; where nothing is writable, in memory once per process). Importing ``ember`` therefore
never imports numba; the first call of a fused op does, once per process.

``EMBER_CPU_KERNELS=0`` switches every kernel off (checked at each call, so tests can flip it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

_lock = threading.Lock()
_modules: dict = {}
_HAVE_NUMBA: bool | None = None


def kernels_enabled() -> bool:
    """False when ``EMBER_CPU_KERNELS=0`` or numba is not installed."""
    global _HAVE_NUMBA
    if os.environ.get("EMBER_CPU_KERNELS", "1") == "0":
        return False
    if _HAVE_NUMBA is None:
        _HAVE_NUMBA = importlib.util.find_spec("numba") is not None
    return _HAVE_NUMBA


def float32_numpy(*arrays) -> bool:
    """Every array a float32 NumPy array (not a subclass, not CuPy): what most loops take."""
    return all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays)


def load(family: str):
    """The compiled kernel module of ``family``, or None while kernels are off. A failed
    compile raises the same error at every call (without compiling again)."""
    if not kernels_enabled():
        return None
    module = _modules.get(family)
    if module is None:
        with _lock:  # two threads' first calls compile once
            module = _modules.get(family)
            if module is None:
                module = _modules[family] = _compile(family)
    if isinstance(module, Exception):
        raise module
    return module


def jit(*args, **options):
    """``numba.njit`` for Ember's loops: with ``cache=True`` the compiled code goes to
    ``_cache_dir()`` (numba fixes a function's cache location when it is decorated, so the
    setting is changed for that moment only and the user's numba code is left alone)."""
    from numba import njit
    from numba.core import config

    def decorate(fn):
        before = config.CACHE_DIR
        if options.get("cache"):
            config.CACHE_DIR = _cache_dir()
        try:
            return njit(*args, **options)(fn)
        finally:
            config.CACHE_DIR = before

    return decorate


@functools.lru_cache(maxsize=1)
def _sources_hash() -> str:
    """A hash of every ember/cpu source file and the numba version. numba's cache checks only
    the stamp of the file that defines a kernel, not of the helpers inlined into it
    (``_rows``, ``_exp``, ``_bits``): keyed by this hash, an edited helper (a checkout, an
    upgrade) gets a fresh cache instead of the old machine code."""
    import numba

    digest = hashlib.sha256(numba.__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_dir() -> str:
    """Where the compiled loops are kept: ``$NUMBA_CACHE_DIR/ember`` (or the user cache,
    ``~/.cache/ember/numba``) / the sources' hash. The ``ember`` folder is Ember's own, so
    pruning old versions never touches other numba caches in $NUMBA_CACHE_DIR."""
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        base = os.path.join(user, "ember")
    else:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(home, "ember", "numba")
    path = os.path.join(base, _sources_hash())
    if not os.path.isdir(path):
        _prune(base)
    return path


_KEEP = 8  # cache directories of other source versions kept (~2-4 MB each)


def _prune(base: str) -> None:
    """Remove all but the newest _KEEP cache directories of earlier source versions."""
    try:
        old = sorted(Path(base).iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:  # no cache yet, or not readable: numba decides what to do with it
        return
    for path in old[_KEEP:]:
        shutil.rmtree(path, ignore_errors=True)


def _compile(family: str):
    """Import (and so compile) ``ember.cpu._<family>_kernels``; the error, if that fails."""
    name = f"ember.cpu._{family}_kernels"
    try:
        try:
            return importlib.import_module(name)
        except RuntimeError as exc:
            # numba's cache=True raises at compile time when neither the source folder nor
            # its user cache dir can be written (a read-only install and HOME): compile in
            # memory instead, once per process
            if "no locator available" not in str(exc) or not JIT_OPTIONS["cache"]:
                raise
            JIT_OPTIONS["cache"] = False
            sys.modules.pop(name, None)
            return importlib.import_module(name)
    except Exception as exc:
        error = RuntimeError(
            f"ember.cpu: compiling the {family} kernels with numba failed ({exc}); "
            "EMBER_CPU_KERNELS=0 runs Ember on its NumPy paths instead"
        )
        error.__cause__ = exc
        return error


# Keyword arguments of every kernel: no GIL (the launchers run blocks on Ember's CPU threads),
# on-disk cache, and NumPy's float semantics (x / 0 gives inf, not an exception). fastmath stays
# off: every operation rounds as written, so results do not depend on the vector width.
JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)
