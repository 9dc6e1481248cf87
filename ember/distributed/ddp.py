"""DistributedDataParallel: one model replica per rank, gradients averaged during backward.

At construction every rank checks that it holds the same model (names, shapes, dtypes) and
takes rank 0's parameters and buffers. Each backward then averages the gradients in buckets
while backward is still running (``reducer.py``); when ``loss.backward()`` returns, every
``param.grad`` is the average over the ranks, so a hand-written loop needs nothing else.
In training, rank 0's buffers (BatchNorm running statistics) are broadcast before each forward,
as torch does with ``broadcast_buffers=True``.

State-dict keys are the wrapped module's own, without torch's ``module.`` prefix (Lightning
strips it too): a checkpoint written by 4 ranks loads into 1 process unchanged, and
``load_state_dict`` also accepts keys that carry the prefix. ``named_parameters()`` still
walks the wrapper (``module.``-prefixed), as in torch.
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np

from ember.autograd.grad_mode import is_grad_enabled
from ember.distributed.reducer import Reducer
from ember.nn.module import Module

__all__ = ["DistributedDataParallel"]


def _signature(module) -> list:
    sig = [
        ["p", n, list(p.data.shape), str(p.data.dtype), bool(p.requires_grad)]
        for n, p in module.named_parameters()
    ]
    sig += [
        ["b", n, list(b.data.shape), str(b.data.dtype), False] for n, b in module.named_buffers()
    ]
    return sig


def _coalesced_broadcast(comm, tensors, root: int = 0) -> None:
    """Broadcast the arrays of ``tensors`` from ``root``: one flat message per dtype."""
    groups: dict = {}
    for t in tensors:
        groups.setdefault(str(t.data.dtype), []).append(t)
    for key in sorted(groups):
        ts = groups[key]
        flat = np.concatenate([t.data.reshape(-1) for t in ts])
        comm.broadcast(flat, root)
        off = 0
        for t in ts:
            n = t.data.size
            t.data[...] = flat[off : off + n].reshape(t.data.shape)
            t._vc[0] += 1
            off += n


class DistributedDataParallel(Module):
    """Wrap ``module`` so that backward averages its gradients over the ranks of ``comm``.

    ``bucket_cap_mb``/``first_bucket_mb``: bucket sizes; ``compression``: None, 'fp16' or
    'bf16' (the buckets travel in half precision, pre-divided by the world size);
    ``broadcast_buffers``: take rank 0's buffers before each training forward;
    ``find_unused_parameters``: after each forward, walk the graph from the outputs so that
    buckets holding parameters it does not reach are sent without waiting for the end of
    backward (costs a graph walk per forward; correctness never depends on it).
    """

    def __init__(
        self,
        module: Module,
        bucket_cap_mb: float = 25,
        first_bucket_mb: float = 1,
        compression=None,
        comm=None,
        broadcast_buffers: bool = True,
        find_unused_parameters: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: expected an ember.nn.Module, got {type(module).__name__}"
            )
        if compression not in (None, "fp16", "bf16"):
            raise ValueError(
                f"DistributedDataParallel: compression must be None, 'fp16' or "
                f"'bf16', got {compression!r}"
            )
        if comm is None:
            from ember.distributed.comm import world

            comm = world()
        self.module = module
        self.comm = comm
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        self.reducer = None
        if comm.size > 1:
            self._check_same_model()
            _coalesced_broadcast(comm, list(module.parameters()) + list(module.buffers()))
            reducer, grad_comm = Reducer, comm.dup("ddp-grad")
            if any(p.is_cuda for p in module.parameters()):  # the NCCL path
                from ember.distributed.nccl import CudaReducer, NcclCommunicator

                reducer, grad_comm = CudaReducer, NcclCommunicator(grad_comm)
            self.reducer = reducer(
                module.parameters(),
                grad_comm,
                bucket_cap_mb,
                first_bucket_mb,
                compression,
                sync_flag=lambda: self.require_backward_grad_sync,
            )

    def _check_same_model(self) -> None:
        sig = _signature(self.module)
        digest = hashlib.sha256(repr(sig).encode()).hexdigest()
        digests = self.comm.allgather_object(digest)
        if all(d == digests[0] for d in digests):
            return
        ref = self.comm.broadcast_object(sig, 0)
        diff = _first_difference(ref, sig) if digests[self.comm.rank] != digests[0] else None
        diffs = self.comm.allgather_object(diff)
        lines = [f"rank {r}: {d}" for r, d in enumerate(diffs) if d]
        raise RuntimeError(
            "DistributedDataParallel: the ranks hold different models "
            "(parameters or buffers differ from rank 0's):\n  " + "\n  ".join(lines)
        )

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        r = self.reducer
        if r is not None and is_grad_enabled():
            if r.active:
                raise RuntimeError(
                    "DistributedDataParallel: the previous backward has not "
                    "finished its gradient synchronisation"
                )
            r.forward_sync = self.require_backward_grad_sync
            if self.require_backward_grad_sync and self.broadcast_buffers and self.module.training:
                self.sync_buffers()
        out = self.module(*args, **kwargs)
        if r is not None and is_grad_enabled() and self.find_unused_parameters:
            r.reachable = _reachable_leaves(out)
        return out

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers now (one message per dtype). Forward does it
        before each training step; call it before evaluation, so that every rank evaluates
        with the same BatchNorm statistics."""
        if self.comm.size > 1:
            buffers = [b for b in self.module.buffers() if b is not None]
            if buffers:
                _coalesced_broadcast(self.comm, buffers)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate local gradients without communicating; the
        first synchronised backward after it averages the accumulated sum."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def finish_gradient_synchronization(self) -> None:
        """Wait until the last backward's gradients are averaged (backward already waits, so
        this only matters to code that replaced the engine's end-of-backward callback)."""
        if self.reducer is not None:
            self.reducer.wait()

    def communication_timings(self) -> dict:
        """Allreduce seconds of the last synchronised backward and the share hidden behind
        backward computation."""
        if self.reducer is None:
            return {"allreduce_s": 0.0, "hidden_s": 0.0, "hidden_share": 0.0}
        return self.reducer.timings()

    def close(self) -> None:
        """Remove the gradient hooks and stop the communication thread."""
        if self.reducer is not None:
            self.reducer.close()
            self.reducer = None

    # ------------------------------------------------------------------ state
    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False):
        return self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        keys = list(state_dict)
        if keys and all(k.startswith("module.") for k in keys):
            from collections import OrderedDict

            stripped = OrderedDict((k[len("module.") :], v) for k, v in state_dict.items())
            meta = getattr(state_dict, "_metadata", None)
            if meta is not None:
                stripped._metadata = type(meta)(
                    (
                        k[len("module.") :]
                        if k.startswith("module.")
                        else ("" if k == "module" else k),
                        v,
                    )
                    for k, v in meta.items()
                )
            state_dict = stripped
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def _reachable_leaves(out) -> set:
    """ids of the leaf tensors the autograd graph of ``out`` (nested outputs) reaches."""
    from ember.tensor.tensor import Tensor

    roots, stack, seen, leaves = [], [out], set(), set()
    while stack:
        x = stack.pop()
        if isinstance(x, Tensor):
            if x.grad_fn is not None:
                roots.append(x.grad_fn)
            elif x.requires_grad:
                leaves.add(id(x))
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    while roots:
        node = roots.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for e in node.__dict__.get("next_edges") or ():
            if e is None:
                continue
            if e[0] is None:
                leaves.add(id(e[1]))
            else:
                roots.append(e[0])
    return leaves


def _first_difference(ref: list, mine: list) -> str:
    for a, b in zip(ref, mine):
        if list(a) != list(b):
            kind = "parameter" if b[0] == "p" else "buffer"
            return (
                f"{kind} {b[1]!r} has shape {tuple(b[2])}, dtype {b[3]}, requires_grad "
                f"{b[4]}; rank 0's {a[1]!r} has shape {tuple(a[2])}, dtype {a[3]}, "
                f"requires_grad {a[4]}"
            )
    if len(ref) != len(mine):
        return f"{len(mine)} parameters and buffers, rank 0 has {len(ref)}"
    return "differs from rank 0"
