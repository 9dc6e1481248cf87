"""Load a CPU kernel module on first use, or report that none is available.

Kernel modules (``ember/cpu/_<family>_kernels.py``) import numba at the top and compile their
loops for fixed signatures when imported, from numba's on-disk cache after the first time
(``cache=True``: next to the source, or numba's user cache dir when that is read-only). Importing
``ember`` therefore never imports numba; the first call of a fused op does, once per process.

``EMBER_CPU_KERNELS=0`` switches every kernel off (checked at each call, so tests can flip it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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
    """The compiled kernel module of ``family``, or None while kernels are off."""
    if not kernels_enabled():
        return None
    module = _modules.get(family)
    if module is None:
        with _lock:  # two threads' first calls compile once
            module = _modules.get(family)
            if module is None:
                try:
                    module = importlib.import_module(f"ember.cpu._{family}_kernels")
                except Exception as exc:
                    raise RuntimeError(
                        f"ember.cpu: compiling the {family} kernels with numba failed ({exc}); "
                        "EMBER_CPU_KERNELS=0 runs Ember on its NumPy paths instead"
                    ) from exc
                _modules[family] = module
    return module


# Keyword arguments of every kernel: no GIL (the launchers run blocks on Ember's CPU threads),
# on-disk cache, and NumPy's float semantics (x / 0 gives inf, not an exception). fastmath stays
# off: every operation rounds as written, so results do not depend on the vector width.
JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)
