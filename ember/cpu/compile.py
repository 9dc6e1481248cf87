"""Load a CPU kernel module on first use, or report that none is available.

Kernel modules (``ember/cpu/_<family>_kernels.py``) import numba at the top and compile their
loops for fixed signatures when imported, from numba's on-disk cache after the first time
(``cache=True``: next to the source, or numba's user cache dir when that is read-only; with
neither writable, in memory once per process). Importing ``ember`` therefore never imports
numba; the first call of a fused op does, once per process.

``EMBER_CPU_KERNELS=0`` switches every kernel off (checked at each call, so tests can flip it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading

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
