"""The machinery under every optimizer's update: scratch buffers, chunked and threaded kernel
runs, and the flat ("foreach") layout of a parameter group.

An optimizer kernel is a plain function of equally shaped raw arrays
``kernel(param, grad, *state, *scratch)`` that updates param and state in place with ufuncs
(``out=``). ``run_kernel`` feeds it either whole arrays or, for big contiguous ones, 1-D
chunks (bounded scratch memory) split across a few threads: NumPy releases the GIL inside
ufunc loops, so two halves of one Adam step run on two cores.

``FlatBucket`` is the multi-tensor path. NumPy pays ~1 us per ufunc call, so a model with
hundreds of small tensors spends its optimizer step in call overhead. A bucket moves the
parameters of one group (one dtype and device) into ONE flat buffer and makes each
``p.data`` a view of it; the state arrays get flat buffers too and the steps one float32
vector. One step is then a grad gather (one ``concatenate``) and a dozen ufunc calls over
the whole group. The layout is re-validated by
identity on every step, so anything that swaps ``p.data`` (``Module.to``,
``vector_to_parameters``) or the state (``Optimizer.load_state_dict``) triggers a rebuild.
The one visible difference from torch: a tensor that shared a parameter's array before the
first flat step (say a module state dict taken then and kept) no longer sees the updates.
"""

from __future__ import annotations

import os

import numpy as np

from ember.ops.parallel import get_num_threads, run_blocks, split
from ember.tensor.backend import get_array_module

# Kernels process at most this many elements per call: scratch stays bounded (2 buffers of
# 4 MiB in float32) however large the model.
CHUNK = 1 << 20
# Below this many elements a kernel call is too short for a second thread to pay off.
PARALLEL_MIN = 1 << 17


# Threads used for one big kernel call (NumPy arrays only): EMBER_OPTIM_THREADS, or else the
# thread count of ember.ops.parallel (EMBER_NUM_THREADS / set_num_threads), whose pool runs it.
NUM_THREADS = int(os.environ.get("EMBER_OPTIM_THREADS", 0)) or None


def effective_grad(xp, p, g, weight_decay: float, maximize: bool, out):
    """``(-g if maximize else g) + weight_decay * p``, into ``out`` when it differs from g."""
    if weight_decay != 0:
        xp.multiply(p, weight_decay, out=out)
        if maximize:
            xp.subtract(out, g, out=out)
        else:
            out += g
        return out
    if maximize:
        xp.negative(g, out=out)
        return out
    return g


def lerp_(xp, a, b, weight: float, tmp) -> None:
    """``a.lerp_(b, weight)`` with torch's two formulas (exact at both ends)."""
    xp.subtract(b, a, out=tmp)
    if weight < 0.5:
        tmp *= weight
        a += tmp
    else:
        tmp *= 1 - weight
        xp.subtract(b, tmp, out=a)


class Workspace:
    """Scratch arrays reused across steps, one set per (array module, dtype)."""

    def __init__(self):
        self._bufs: dict = {}

    def take(self, xp, dtype, n: int, count: int) -> list:
        """``count`` 1-D scratch arrays of ``n`` elements (views of cached buffers)."""
        key = (xp.__name__, np.dtype(dtype).str)
        bufs = self._bufs.get(key)
        if bufs is None or len(bufs) < count or bufs[0].size < n:
            size = max(n, bufs[0].size if bufs else 0)
            bufs = [xp.empty(size, dtype=dtype) for _ in range(max(count, len(bufs or ())))]
            self._bufs[key] = bufs
        return [b[:n] for b in bufs[:count]]

    def clear(self) -> None:
        self._bufs.clear()


def run_kernel(kernel, arrays: list, n_scratch: int, workspace: Workspace) -> None:
    """Call ``kernel(*arrays, *scratch)``; big contiguous arrays go in 1-D chunks of at most
    CHUNK elements, each split across NUM_THREADS threads (NumPy only). The caller holds
    ``np.errstate(all="ignore")``, as ``Optimizer.step`` does."""
    run_fused = getattr(kernel, "run_fused", None)  # a CUDA kernel (ember.cuda.multi_tensor)
    if run_fused is not None and run_fused(arrays):
        return
    first = arrays[0]
    n = first.size
    xp = get_array_module(first)
    threads = (NUM_THREADS or get_num_threads()) if xp is np and n >= PARALLEL_MIN else 1
    contiguous = all(a.flags.c_contiguous for a in arrays)
    if (n <= CHUNK and threads == 1) or not contiguous:
        scratch = workspace.take(xp, first.dtype, n, n_scratch)
        if first.ndim != 1:
            scratch = [s.reshape(first.shape) for s in scratch]
        kernel(*arrays, *scratch)
        return
    flats = [a.reshape(-1) for a in arrays]  # views: every array is contiguous
    width = min(n, CHUNK)
    scratch = workspace.take(xp, first.dtype, width, n_scratch)
    for start in range(0, n, width):
        stop = min(n, start + width)
        if threads == 1 or stop - start < PARALLEL_MIN:
            kernel(*[a[start:stop] for a in flats], *[s[: stop - start] for s in scratch])
            continue

        def part(lo, hi, start=start):
            kernel(*[a[start + lo : start + hi] for a in flats], *[s[lo:hi] for s in scratch])

        # One block per thread: each block is a dozen ufunc calls, each taking and dropping
        # the GIL, and on two threads those hand-offs set the pace (Adam on 401K floats,
        # second core idle: 0.38 ms in 2 blocks, 0.46 in 4, 0.53 in 8; one thread 0.57).
        # Blocks are still handed out dynamically: a thread that has not started yet leaves
        # its block to the caller.
        block = split(stop - start, PARALLEL_MIN // 2, threads, per_thread=1)
        run_blocks(part, stop - start, block, threads)


class FlatBucket:
    """The parameters of one group (same dtype and device) and their state in flat buffers."""

    __slots__ = (
        "params",
        "n",
        "flat",
        "views",
        "names",
        "state_flat",
        "state_views",
        "steps",
        "step_views",
        "grad_flat",
    )

    def __init__(self, params: list, states: list, names: tuple, with_step: bool):
        first = params[0].data
        xp = get_array_module(first)
        dtype = first.dtype
        sizes = [p.data.size for p in params]
        offsets = np.concatenate(([0], np.cumsum(sizes))).tolist()
        self.params = list(params)
        self.n = offsets[-1]
        self.names = names
        self.flat, self.views = _flatten(xp, dtype, [p.data for p in params], offsets)
        for p, v in zip(params, self.views):
            p.data = v
        self.state_flat, self.state_views = {}, {}
        for name in names:
            flat, views = _flatten(xp, dtype, [st[name].data for st in states], offsets)
            for st, v in zip(states, views):
                st[name].data = v
            self.state_flat[name], self.state_views[name] = flat, views
        self.steps = self.step_views = None
        if with_step:
            self.steps = np.array([float(st["step"].data) for st in states], dtype=np.float32)
            self.step_views = [self.steps[i : i + 1].reshape(()) for i in range(len(states))]
            for st, v in zip(states, self.step_views):
                st["step"].data = v
        self.grad_flat = None

    @staticmethod
    def supports(params: list, states: list, names: tuple) -> bool:
        """All parameters and their state arrays share one dtype and array type."""
        first = params[0].data
        kind, dtype = type(first), first.dtype
        dev = getattr(first, "device", None)
        for p, st in zip(params, states):
            arrs = [p.data, p.grad.data] + [st[name].data for name in names]
            for a in arrs:
                if type(a) is not kind or a.dtype != dtype or getattr(a, "device", None) != dev:
                    return False
        return True

    def valid(self, params: list, states: list) -> bool:
        """Still the same parameters, each still viewing this bucket (and so its state)."""
        if len(params) != len(self.params):
            return False
        for p, q, v in zip(params, self.params, self.views):
            if p is not q or p.data is not v:
                return False
        for name in self.names:
            for st, v in zip(states, self.state_views[name]):
                t = st.get(name)
                if t is None or t.data is not v:
                    return False
        if self.step_views is not None:
            for st, v in zip(states, self.step_views):
                t = st.get("step")
                if t is None or t.data is not v:
                    return False
        return True

    def gather_grads(self):
        """The group's gradients copied into one flat array. (The grads are not made views
        of it: code such as a data-parallel wrapper may own their arrays.)"""
        xp = get_array_module(self.flat)
        if self.grad_flat is None:
            self.grad_flat = xp.empty(self.n, dtype=self.flat.dtype)
        xp.concatenate([p.grad.data.reshape(-1) for p in self.params], out=self.grad_flat)
        return self.grad_flat


def _flatten(xp, dtype, arrays: list, offsets: list):
    flat = xp.empty(offsets[-1], dtype=dtype)
    if arrays:
        xp.concatenate([a.reshape(-1) for a in arrays], out=flat)
    views = [flat[offsets[i] : offsets[i + 1]].reshape(a.shape) for i, a in enumerate(arrays)]
    return flat, views
