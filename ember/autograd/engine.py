"""The backward engine: count dependencies, then one reverse pass in topological order.

Gradients for a node's outputs are summed in buffers; a node runs once every consumer has
reported. Leaf gradients accumulate into ``.grad`` in place when that is safe: an array handed
to one consumer is never mutated on behalf of another (the ``_Ownership`` ledger). A leaf's
gradient may arrive as a ``Deferred`` (computed on a pool thread meanwhile): it is delivered
after the last node, before backward returns.
"""

from __future__ import annotations

import threading

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.grad_mode import state
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

# Callbacks queued (queue_callback) during each backward in progress, innermost last.
_callbacks: list = []


class _Local(threading.local):
    defer = False


_local = _Local()


def deferring() -> bool:
    """Whether a backward running now in this thread accepts ``Deferred`` leaf gradients (a
    plain ``.backward()``: no create_graph, no ``inputs=``, no anomaly mode)."""
    return _local.defer


class Deferred:
    """A gradient still being computed on another thread: ``source.result()`` gives the array
    (``source.result()[index]`` with an index). A node's backward may return one for an input
    whose edge is a leaf while ``deferring()``; the engine delivers it once the pass has run
    every node, so the worker's product overlaps the rest of backward. Anywhere else the
    engine waits for it at once."""

    __slots__ = ("source", "index")

    def __init__(self, source, index=None):
        self.source, self.index = source, index

    def result(self) -> Tensor:
        value = self.source.result()
        return Tensor(value if self.index is None else value[self.index])


def queue_callback(fn) -> None:
    """Run ``fn()`` once the backward pass in progress has finished (after every gradient
    and hook), as torch's ``Engine.queue_callback``: DDP joins its allreduces here."""
    if not _callbacks:
        raise RuntimeError("queue_callback: can only be called while a backward pass runs")
    _callbacks[-1].append(fn)


def _root_base(arr):
    while getattr(arr, "base", None) is not None:
        arr = arr.base
    return id(arr)


def _writable(arr) -> bool:
    """False for broadcast views (stride 0), which must not become a gradient buffer."""
    flags = arr.flags
    if not getattr(flags, "writeable", True):
        return False
    return 0 not in arr.strides or arr.size <= 1


class _Ownership:
    """Which gradient arrays (by their root buffer) have already been given to a consumer."""

    def __init__(self):
        self.given = set()

    def take(self, arr):
        """The array if nobody holds it yet (and it is a real, writable array), else a copy."""
        key = _root_base(arr)
        if key in self.given or not _writable(arr):
            arr = arr.copy()
            key = id(arr)
        self.given.add(key)
        return arr

    def mark(self, arr) -> None:
        self.given.add(_root_base(arr))


def _check_root(t: Tensor, g, i: int):
    if not isinstance(t, Tensor):
        raise TypeError(f"backward: element {i} of tensors is not a Tensor but {type(t).__name__}")
    if not t.requires_grad:
        raise RuntimeError(
            f"element {i} of tensors does not require grad and does not have a grad_fn"
        )
    if g is None:
        if t.data.size != 1:
            raise RuntimeError(
                "grad can be implicitly created only for scalar outputs: backward on a tensor "
                f"of shape {tuple(t.data.shape)} needs the `gradient` argument"
            )
        xp = get_array_module(t.data)
        return Tensor(xp.ones(t.data.shape, t.data.dtype)), True
    if not isinstance(g, Tensor):
        g = Tensor(np.asarray(g, dtype=t.data.dtype))
    if g.data.shape != t.data.shape:
        raise RuntimeError(
            f"backward: Mismatch in shape: grad_output[{i}] has a shape of "
            f"{tuple(g.data.shape)} and output[{i}] has a shape of {tuple(t.data.shape)}."
        )
    return g, False


def run_backward(
    tensors,
    grad_tensors,
    retain_graph: bool,
    create_graph: bool,
    inputs=None,
    accumulate: bool = True,
    allow_unused: bool = False,
):
    """Backpropagate from ``tensors``. With ``accumulate`` the leaves' ``.grad`` grows; without
    it (``autograd.grad``) the gradients of ``inputs`` are returned instead."""
    if _amp.state.enabled:  # backward inside an autocast region: no casts in backward ops
        args = (tensors, grad_tensors, retain_graph, create_graph, inputs, accumulate)
        return _amp.suspended(run_backward, *args, allow_unused)
    own = _Ownership()
    roots = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        g, fresh = _check_root(t, g, i)
        if not fresh:
            own.mark(g.data)
        roots.append((t, g))

    # Where the requested inputs' gradients are caught (autograd.grad, backward(inputs=)).
    # capture_leaf is None without inputs=; with them, leaves not listed get nothing.
    capture_leaf, capture_node, captured = (None if inputs is None else {}), {}, {}
    if inputs is not None:
        for k, x in enumerate(inputs):
            if not isinstance(x, Tensor) or not x.requires_grad:
                raise RuntimeError(f"grad: input {k} does not require grad")
            if x.grad_fn is None:
                capture_leaf.setdefault(id(x), []).append(k)
            else:
                capture_node.setdefault((id(x.grad_fn), x._output_nr), []).append(k)

    # Dependencies: how many edges point at each node from the part of the graph we will run.
    deps: dict = {}
    # Leaves with post-accumulate hooks: id -> [edges still to deliver, got a gradient]
    post: dict = {}
    count_post = accumulate
    stack = []
    seen = set()
    for t, _ in roots:
        if t.grad_fn is not None and id(t.grad_fn) not in seen:
            seen.add(id(t.grad_fn))
            stack.append(t.grad_fn)
        elif t.grad_fn is None and count_post and t._post_acc_hooks:
            _count_post(post, t, capture_leaf)
    while stack:
        node = stack.pop()
        edges = node.__dict__.get("next_edges")
        if edges is None:
            continue
        for e in edges:
            if e is None:
                continue
            n = e[0]
            if n is None:
                if count_post and e[1]._post_acc_hooks:
                    _count_post(post, e[1], capture_leaf)
                continue
            deps[n] = deps.get(n, 0) + 1
            if id(n) not in seen:
                seen.add(id(n))
                stack.append(n)

    buffers: dict = {}
    hooked: dict = {}  # leaves with hooks: their summed gradient is delivered after the pass
    ready = []
    prev_enabled, prev_defer = state.enabled, _local.defer
    state.enabled = create_graph
    _local.defer = not create_graph and accumulate and inputs is None and not state.anomaly
    deferred = []  # (leaf, Deferred): delivered after the last node
    _callbacks.append([])
    try:
        for t, g in roots:
            if t.grad_fn is None:
                if t._hooks:
                    _hold(hooked, t, g)
                else:
                    _deliver_leaf(t, g, own, create_graph, accumulate, capture_leaf, captured)
                if post:
                    _leaf_edge_done(post, t, g, hooked)
            else:
                _add_to_buffer(buffers, t.grad_fn, t._output_nr, g, own, create_graph)
        for t, _ in roots:
            n = t.grad_fn
            if n is not None and deps.get(n, 0) == 0 and n not in ready:
                ready.append(n)

        while ready:
            node = ready.pop()
            grads = buffers.pop(node, None)
            in_grads = _run_node(
                node, grads, own, create_graph, capture_node, captured, retain_graph
            )
            # node edges first (_add_to_buffer marks what it keeps), then the leaves: a leaf
            # never takes, and later accumulates into, an array that a pending node still holds
            leaves = None
            for e, g in zip(node.next_edges, in_grads):
                if e is None:
                    continue
                n, slot = e
                if type(g) is Deferred:
                    if n is None and not slot._hooks and not (post and id(slot) in post):
                        deferred.append((slot, g))
                        continue
                    g = g.result()
                if n is None:
                    if g is not None or (post and id(slot) in post):
                        if leaves is None:
                            leaves = []
                        leaves.append((slot, g))
                    continue
                if g is not None:
                    _add_to_buffer(buffers, n, slot, g, own, create_graph)
                left = deps[n] - 1
                deps[n] = left
                if left == 0:
                    ready.append(n)
            for slot, g in leaves or ():
                if g is not None:
                    if slot._hooks:
                        _hold(hooked, slot, g)
                    else:
                        _deliver_leaf(
                            slot, g, own, create_graph, accumulate, capture_leaf, captured
                        )
                if post:
                    _leaf_edge_done(post, slot, g, hooked)
        _local.defer = prev_defer
        for slot, g in reversed(deferred):  # the latest is the likeliest still to be queued
            _deliver_leaf(slot, g.result(), own, create_graph, accumulate, capture_leaf, captured)
        for leaf, g in hooked.values():
            _deliver_leaf(leaf, g, own, create_graph, accumulate, capture_leaf, captured)
            if id(leaf) in post:
                _run_post_hooks(leaf)
        queued = _callbacks[-1]
        while queued:
            queued.pop(0)()
    finally:
        state.enabled, _local.defer = prev_enabled, prev_defer
        _callbacks.pop()

    if inputs is None:
        return None
    if accumulate:  # backward(inputs=...): a non-leaf input keeps its gradient in .grad
        for k, x in enumerate(inputs):
            g = captured.get(k)
            if x.grad_fn is not None and g is not None:
                x.grad = g if x.grad is None else x.grad + g
        return None
    results = [None] * len(inputs)
    for k, g in captured.items():
        results[k] = g
    for k, r in enumerate(results):
        if r is None and not allow_unused:
            raise RuntimeError(
                f"grad: input {k} appears to not have been used in the graph. "
                "Set allow_unused=True if this is the desired behavior."
            )
    return results


def _count_post(post, leaf, capture_leaf) -> None:
    """One more edge will deliver to ``leaf`` (only leaves whose .grad this pass accumulates)."""
    if capture_leaf is not None and id(leaf) not in capture_leaf:
        return
    entry = post.get(id(leaf))
    if entry is None:
        post[id(leaf)] = [1, False]
    else:
        entry[0] += 1


def _leaf_edge_done(post, leaf, g, hooked) -> None:
    """An edge to ``leaf`` has delivered (``g`` may be None); after the last one the leaf's
    .grad is final and its post-accumulate hooks run (at the end, for leaves with hooks
    whose gradient is held until then)."""
    entry = post.get(id(leaf))
    if entry is None:
        return
    entry[0] -= 1
    if g is not None:
        entry[1] = True
    if entry[0] == 0:
        if not entry[1]:
            del post[id(leaf)]  # no gradient this pass: torch runs no hook either
        elif id(leaf) not in hooked:
            _run_post_hooks(leaf)


def _run_post_hooks(leaf) -> None:
    for h in tuple(leaf._post_acc_hooks):
        h(leaf)


def _hold(hooked, leaf, g) -> None:
    """Sum a hooked leaf's gradients first: as in torch, its hooks run once per backward."""
    prev = hooked.get(id(leaf))
    hooked[id(leaf)] = (leaf, g) if prev is None else (leaf, prev[1] + g)


def _add_to_buffer(buffers, node, slot, g, own, create_graph):
    buf = buffers.get(node)
    if buf is None:
        buf = buffers[node] = [None] * node._n_outputs + [False] * node._n_outputs
    n = node._n_outputs
    old = buf[slot]
    if old is None:
        buf[slot] = g
        if not create_graph:
            own.mark(g.data)  # held here until the node runs: never a leaf's .grad buffer
    elif create_graph:
        buf[slot] = old + g
    elif buf[n + slot]:  # we own old's array: accumulate in place
        old.data += g.data
    else:
        summed = old.data + g.data
        if type(summed) is not type(old.data):  # NumPy answers 0-d + 0-d with a scalar
            summed = np.asarray(summed)
        own.mark(summed)
        buf[slot] = Tensor(summed)
        buf[n + slot] = True


def _run_node(node, buf, own, create_graph, capture_node, captured, retain_graph):
    n = node._n_outputs
    edges = node.next_edges
    d = node.__dict__
    if n == 1 and not capture_node and "_hooks" not in d and "_retain" not in d:
        g = None if buf is None else buf[0]  # the common case: one output, nothing to run
        if g is None:
            return [None] * len(edges)
        return _finish_node(node, edges, node.backward(g), retain_graph)
    grads = list(buf[:n]) if buf is not None else [None] * n
    # hooks and retain_grad on the tensors this node produced
    hooks = d.get("_hooks")
    retain = d.get("_retain")
    for i in range(n):
        g = grads[i]
        if g is None:
            continue
        if hooks and i in hooks:
            for h in hooks[i]:
                r = h(g)
                if r is not None:
                    g = r
            grads[i] = g
        if retain and i in retain:
            for ref in retain[i]:
                t = ref()
                if t is not None:
                    if t.grad is None:
                        t.grad = Tensor(g.data.copy()) if not create_graph else g
                    else:
                        t.grad = Tensor(t.grad.data + g.data) if not create_graph else t.grad + g
        if capture_node:
            ks = capture_node.get((id(node), i))
            if ks:
                for k in ks:
                    captured[k] = g if create_graph else Tensor(own.take(g.data))
    if all(g is None for g in grads):
        return [None] * len(edges)
    if n > 1 and any(g is None for g in grads):
        for i, (shape, dt) in enumerate(node._out_meta):
            if grads[i] is None:
                xp = get_array_module(next(g for g in grads if g is not None).data)
                grads[i] = Tensor(xp.zeros(shape, dt))
    return _finish_node(node, edges, node.backward(*grads), retain_graph)


def _finish_node(node, edges, out, retain_graph):
    """Check what backward returned, then free the node's saved arrays."""
    if type(out) is not tuple and type(out) is not list:
        out = (out,)
    if len(out) != len(edges):
        raise RuntimeError(
            f"function {node.name()} returned an incorrect number of gradients "
            f"(expected {len(edges)}, got {len(out)})"
        )
    if state.anomaly:
        _check_anomaly(node, out)
    if not retain_graph:
        node._release()
    return out


def _check_anomaly(node, grads):
    for i, g in enumerate(grads):
        if g is None:
            continue
        xp = get_array_module(g.data)
        bad = ~xp.isfinite(g.data)
        if bool(bad.any()):
            kind = "nan" if bool(xp.isnan(g.data).any()) else "inf"
            trace = node.__dict__.get("_trace", "(no forward trace recorded)")
            raise RuntimeError(
                f"Function '{node.name()}' returned {kind} values in its {i}th output.\n"
                f"The forward op that created it was called at:\n{trace}"
            )


def _deliver_leaf(leaf: Tensor, g: Tensor, own, create_graph, accumulate, capture_leaf, captured):
    if leaf._hooks:
        for h in leaf._hooks:
            r = h(g)
            if r is not None:
                g = r
    if capture_leaf is not None:
        ks = capture_leaf.get(id(leaf))
        if ks:
            for k in ks:
                prev = captured.get(k)
                if prev is None:
                    captured[k] = g if create_graph else Tensor(own.take(g.data))
                elif create_graph:
                    captured[k] = prev + g
                else:
                    prev.data += g.data
        if not accumulate or ks is None:
            return
    if not accumulate:
        return
    if g.data.shape != leaf.data.shape:
        raise RuntimeError(
            f"backward: the gradient for a leaf of shape {tuple(leaf.data.shape)} has shape "
            f"{tuple(g.data.shape)}"
        )
    if g.data.dtype != leaf.data.dtype:
        g = Tensor(g.data.astype(leaf.data.dtype))
    if leaf.grad is None:
        if create_graph:
            leaf.grad = g
        else:
            arr = own.take(g.data)
            if not arr.flags.c_contiguous and leaf.data.flags.c_contiguous:
                arr = get_array_module(arr).ascontiguousarray(arr)  # torch: grad layout = leaf's
            leaf.grad = Tensor(arr)
    elif create_graph or leaf.grad.requires_grad:
        leaf.grad = leaf.grad + g
    else:
        leaf.grad.data += g.data
