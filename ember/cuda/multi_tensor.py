"""Launchers for multi_tensor.cu: Adam / AdamW / SGD steps over flat buffers (one launch for
a whole parameter group), optionally writing low-precision model weights from fp32 masters,
and GradScaler's fused unscale + inf check over a list of gradients.

Oracles: the optimizers' NumPy kernels (ember.optim.adam / sgd ``_make_kernel``) and, for
the unscale, ``unscale_and_check_composite`` below.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C
from ember.tensor.backend import get_array_module

SOURCE = "multi_tensor.cu"
_LOW = ("__half", "__nv_bfloat16")
# (param / state, grad, model copy) storage combinations that are instantiated
_COMBOS = (
    ("float", "float", "float"),
    *(("float", t, t) for t in _LOW),  # fp32 masters, low-precision grads and model
    *(("float", "float", t) for t in _LOW),  # fp32 masters and grads, low-precision model
    *((t, t, t) for t in _LOW),  # low-precision parameters stepped in place
)
NAMES = tuple(
    f"{k}<{p}, {g}, {m}>" for k in ("adam_step", "sgd_step") for p, g, m in _COMBOS
) + tuple(f"unscale_and_check<{t}>" for t in ("float",) + _LOW)
_THREADS = 256


def _combo(p, g, model) -> tuple:
    tp, tg = C.ctype(p.dtype), C.ctype(g.dtype)
    if model is None:  # TM is unused behind a null pointer: any instantiation of (TP, TG)
        for combo in _COMBOS:
            if combo[:2] == (tp, tg):
                return combo
    tm = None if model is None else C.ctype(model.dtype)
    if (tp, tg, tm) not in _COMBOS:
        raise TypeError(
            f"multi_tensor: no kernel for param {p.dtype}, grad {g.dtype}, model "
            f"{None if model is None else model.dtype}"
        )
    return tp, tg, tm


def _check(p, *others) -> None:
    for a in others:
        if a is not None and (a.size != p.size or not a.flags.c_contiguous):
            raise ValueError(
                f"multi_tensor: every buffer must be contiguous with {p.size} elements, "
                f"got {a.shape}"
            )
    if not p.flags.c_contiguous:
        raise ValueError("multi_tensor: the parameter buffer must be contiguous")


def _scale_arg(inv_scale):
    if inv_scale is None:
        return C.NULL
    return C.cupy_module().asarray(inv_scale, dtype=np.float32).reshape(1)


def adam_step_(
    p,
    g,
    exp_avg,
    exp_avg_sq,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    maximize: bool = False,
    max_exp_avg_sq=None,
    model=None,
    inv_scale=None,
):
    """One Adam (decoupled: AdamW) step over flat buffers, in place; torch's formulas."""
    _check(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, model)
    kernel = C.function(SOURCE, NAMES, "adam_step<{}, {}, {}>".format(*_combo(p, g, model)))
    step_size = lr / (1.0 - beta1**step)
    bc2_sqrt = (1.0 - beta2**step) ** 0.5
    args = (p, g, exp_avg, exp_avg_sq, C.opt(max_exp_avg_sq), C.opt(model), _scale_arg(inv_scale))
    args += (np.int64(p.size), np.float32(lr), np.float32(beta1), np.float32(beta2))
    args += (np.float32(eps), np.float32(weight_decay), np.int32(decoupled), np.int32(maximize))
    args += (np.float32(step_size), np.float32(bc2_sqrt))
    kernel((C.blocks_for(p.size, _THREADS * 4),), (_THREADS,), args)


def sgd_step_(
    p,
    g,
    momentum_buffer=None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first: bool = False,
    model=None,
    inv_scale=None,
):
    """One SGD step over flat buffers, in place; ``first``: the buffer takes the gradient."""
    _check(p, g, momentum_buffer, model)
    kernel = C.function(SOURCE, NAMES, "sgd_step<{}, {}, {}>".format(*_combo(p, g, model)))
    args = (p, g, C.opt(momentum_buffer), C.opt(model), _scale_arg(inv_scale))
    args += (np.int64(p.size), np.float32(lr), np.float32(momentum), np.float32(dampening))
    args += (np.float32(weight_decay), np.int32(nesterov), np.int32(maximize), np.int32(first))
    kernel((C.blocks_for(p.size, _THREADS * 4),), (_THREADS,), args)


def unscale_and_check_(arrays, inv_scale):
    """Multiply every gradient array by ``inv_scale`` in place; return a 0-d float32 device
    array, 1.0 when any value was inf or NaN, else 0.0. One launch per dtype present (one for
    a model of one dtype), no host sync."""
    cp = C.cupy_module()
    found = cp.zeros((), dtype=np.float32)
    scale = _scale_arg(inv_scale)
    groups: dict = {}
    for a in arrays:
        if a is None or a.size == 0:
            continue
        t = C.ctype(a.dtype)
        if t is None or not a.flags.c_contiguous:
            raise ValueError(
                f"unscale_and_check_: gradients must be contiguous float32/float16/bfloat16, "
                f"got {a.dtype} {a.shape}"
            )
        groups.setdefault(t, []).append(a)
    for t, arrs in groups.items():
        ptrs, offsets, total = _table(cp, arrs)
        kernel = C.function(SOURCE, NAMES, f"unscale_and_check<{t}>")
        args = (ptrs, offsets, np.int32(len(arrs)), scale, found)
        kernel((C.blocks_for(total, _THREADS * 4),), (_THREADS,), args)
    return found


_TABLES: dict = {}  # (pointers, sizes) -> the device tables: no upload while the grads stay put


def _table(cp, arrs) -> tuple:
    """The device pointer table and size prefix sums of ``arrs`` (cached: CuPy's memory pool
    hands a training loop the same gradient buffers step after step)."""
    key = (tuple(a.data.ptr for a in arrs), tuple(a.size for a in arrs))
    hit = _TABLES.get(key)
    if hit is None:
        offsets = np.zeros(len(arrs) + 1, dtype=np.int64)
        np.cumsum(key[1], out=offsets[1:])
        ptrs = cp.asarray(np.array(key[0], dtype=np.uint64))
        if len(_TABLES) >= 16:
            _TABLES.clear()
        hit = _TABLES[key] = (ptrs, cp.asarray(offsets), int(offsets[-1]))
    return hit


def unscale_and_check_composite(arrays, inv_scale):
    """The oracle (any xp): the same in-place unscale and found-inf flag, array by array."""
    found, xp = False, np
    for a in arrays:
        if a is None or a.size == 0:
            continue
        xp = get_array_module(a)
        found = found or not bool(xp.isfinite(a).all())
        a *= a.dtype.type(float(inv_scale))
    return xp.asarray(1.0 if found else 0.0, dtype=np.float32)


def _fits(arrays) -> bool:
    """Optimizer buffers (param, grad, *state) one kernel takes as they are."""
    p, g = arrays[0], arrays[1]
    if get_array_module(p) is np or p.dtype != g.dtype or C.ctype(p.dtype) is None:
        return False
    return all(a.dtype == p.dtype and a.size == p.size and a.flags.c_contiguous for a in arrays)


def attach(composite, step):
    """Give an optimizer's foreach kernel a fused path: ember.optim.foreach.run_kernel calls
    ``composite.run_fused(arrays)`` first, which runs ``step(param, grad, *state)`` as ONE launch
    over the whole (flat) buffers when they suit a kernel, and returns False otherwise so the
    composite runs as before."""

    def run_fused(arrays) -> bool:
        if not _fits(arrays):
            return False
        step(*arrays)
        return True

    composite.run_fused = run_fused
    return composite
