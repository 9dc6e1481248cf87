"""The Function base: one op, one class; an applied Function is a node of the graph.

``forward`` takes raw arrays (NumPy or CuPy) and returns raw arrays. ``backward`` receives one
gradient Tensor per output and returns one per input (None where no gradient flows). Writing
backward with Tensor ops is what makes higher-order gradients work: under ``create_graph=True``
the backward computation is itself recorded.
"""

from __future__ import annotations

import traceback

import numpy as np

from ember.autograd.grad_mode import state
from ember.tensor import backend
from ember.tensor.backend import get_array_module
from ember.tensor.dtypes import FLOATING_NP
from ember.tensor.tensor import Tensor

_FREED = object()


def as_array(value):
    """NumPy turns 0-d results into scalars; Tensors always hold arrays."""
    if type(value) is np.ndarray:
        return value
    if isinstance(value, np.generic) or not hasattr(value, "__cuda_array_interface__"):
        return np.asarray(value)
    return value


class Function:
    """Subclass, implement ``forward`` and ``backward``, then call ``MyFn(params).apply(*xs)``.

    Class attributes:
      ``is_view``: output 0 shares memory with input 0 (it shares the version counter).
    """

    is_view = False

    # ------------------------------------------------------------ what ops call
    def save_for_backward(self, *arrays) -> None:
        """Keep these arrays for backward (only what backward really needs)."""
        self._saved = arrays

    def mark_non_differentiable(self, *arrays) -> None:
        """Outputs (given by their arrays) that never carry a gradient, e.g. argmax indices."""
        self._non_diff = {id(a) for a in arrays}

    @property
    def saved_tensors(self) -> tuple:
        """The saved arrays as Tensors, checked against in-place modification.

        Under ``create_graph`` a saved input is the input Tensor itself and a saved output is
        reconnected to this node, so the backward formula is differentiated through them.
        """
        saved = self.__dict__.get("_saved", ())
        if saved is _FREED:
            raise RuntimeError(
                f"{self.name()}: Trying to backward through the graph a second time (or directly "
                "access saved tensors after they have already been freed). Saved intermediate "
                "values of the graph are freed when you call .backward() or autograd.grad(). "
                "Specify retain_graph=True if you need to backward through the graph a second "
                "time or if you need to access saved tensors after calling backward."
            )
        info = self.__dict__.get("_saved_info")
        if info is None:
            return tuple(None if a is None else Tensor(as_array(a)) for a in saved)
        out = []
        connect = state.enabled
        for arr, (src, vc, version) in zip(saved, info):
            if arr is None:
                out.append(None)
                continue
            if vc is not None and vc[0] != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: [{arr.dtype} tensor of shape {list(arr.shape)}], "
                    f"which is used by {self.name()}, is at version {vc[0]}; expected version "
                    f"{version} instead."
                )
            if connect and isinstance(src, Tensor):
                out.append(src)
            elif connect and type(src) is int:
                out.append(Tensor(arr, True, self, src))
            else:
                out.append(Tensor(as_array(arr)))
        return tuple(out)

    # -------------------------------------------------------- what subclasses do
    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grads):
        raise RuntimeError(f"{self.name()}: this op is not differentiable")

    def name(self) -> str:
        return f"{type(self).__name__}Backward"

    def __repr__(self) -> str:
        return f"<{self.name()} object>"

    # -------------------------------------------------------------- the engine
    def apply(self, *inputs):
        """Run forward on the inputs' arrays and, when grad mode is on and an input requires
        grad, record this node with one edge per input.

        ``self.needs_input_grad`` is set before forward runs, so forward can save only what
        the gradients that are really needed will use. (Hot: every op goes through here, so
        the common one-output case builds no lists.)
        """
        edges = None
        if state.enabled:
            for x in inputs:
                if isinstance(x, Tensor) and x.requires_grad:
                    edges = _edges(inputs)
                    break
        if edges is None:
            n = len(inputs)
            self.needs_input_grad = _NO_GRAD[n] if n < 8 else (False,) * n
            arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        else:
            self.needs_input_grad = tuple([e is not None for e in edges])
            arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        if backend._cupy is not None and len(arrays) > 1:  # two devices only once CuPy is in
            _device_mismatch(self, inputs)
        raw = self.forward(*arrays)
        if type(raw) is not tuple:  # one output
            out = raw if type(raw) is np.ndarray else as_array(raw)
            if edges is None:
                result = Tensor(out)
            else:
                self.next_edges = edges
                self._n_outputs = 1
                non_diff = self.__dict__.get("_non_diff")
                if out.dtype in FLOATING_NP and not (non_diff and id(out) in non_diff):
                    result = Tensor(out, True, self, 0)
                else:
                    result = Tensor(out)
                if self.__dict__.get("_saved"):
                    self._record_saved((raw,), (out,), inputs, (result,))
                if state.anomaly:
                    self._trace = "".join(traceback.format_stack()[:-1])  # all but apply
            if self.is_view:
                _share_version(result, inputs[0])
            return result
        outs = [as_array(o) for o in raw]
        if edges is None:
            results = [Tensor(o) for o in outs]
        else:
            self.next_edges = edges
            non_diff = self.__dict__.get("_non_diff")
            results = []
            for i, o in enumerate(outs):
                diff = o.dtype in FLOATING_NP and not (non_diff and id(o) in non_diff)
                results.append(Tensor(o, diff, self if diff else None, i))
            self._n_outputs = len(outs)
            self._out_meta = [(o.shape, o.dtype) for o in outs]
            if self.__dict__.get("_saved"):
                self._record_saved(raw, outs, inputs, results)
            if state.anomaly:
                self._trace = "".join(traceback.format_stack()[:-1])  # all but apply itself
        if self.is_view:
            _share_version(results[0], inputs[0])
        return tuple(results)

    def _record_saved(self, raws, outs, inputs, results) -> None:
        """Describe what forward saved (where each array came from, at which version)."""
        saved = self._saved
        if any(r is not o for r, o in zip(raws, outs)):
            # a saved NumPy scalar output must be the very array its Tensor holds
            swap = {id(r): o for r, o in zip(raws, outs)}
            saved = self._saved = tuple(swap.get(id(a), a) for a in saved)
        if type(outs[0]) is not np.ndarray:
            saved = self._saved = _scalars_on_device(saved, outs[0])
        self._saved_info = _describe_saved(saved, inputs, results)

    # hooks registered on non-leaf tensors live on the node that made them
    def _tensor_hooks(self, output_nr: int) -> list:
        hooks = self.__dict__.setdefault("_hooks", {})
        return hooks.setdefault(output_nr, [])

    def _retain_hooks(self, output_nr: int) -> list:
        hooks = self.__dict__.setdefault("_retain", {})
        return hooks.setdefault(output_nr, [])

    def _release(self) -> None:
        """Free what backward saved, so a second backward raises instead of misbehaving."""
        if self.__dict__.get("_saved"):
            self._saved = _FREED
            self._saved_info = None


_NO_GRAD = tuple((False,) * n for n in range(8))


def _edges(inputs) -> list:
    """One edge per input: (node, output index) for a non-leaf, (None, tensor) for a leaf
    that requires grad, None where no gradient flows."""
    edges = []
    for x in inputs:
        if isinstance(x, Tensor) and x.requires_grad:
            fn = x.grad_fn
            edges.append((fn, x._output_nr) if fn is not None else (None, x))
        else:
            edges.append(None)
    return edges


def _share_version(result: Tensor, base: Tensor) -> None:
    """A view's output shares its base's version counter and points at the root base."""
    result._vc = base._vc
    result._base = base if base._base is None else base._base


def _device_mismatch(fn: Function, inputs) -> None:
    """Raise the clear error when the Tensor inputs live on two devices (cpu and cuda, or two
    GPUs)."""
    devs = []
    for x in inputs:
        if isinstance(x, Tensor) and x.device not in devs:
            devs.append(x.device)
    if len(devs) > 1:
        raise RuntimeError(
            f"{type(fn).__name__}: expected all tensors on the same device, "
            f"got {devs[0]} and {devs[1]}"
        )


def _scalars_on_device(saved: tuple, like) -> tuple:
    """A saved scalar operand joins the outputs' device: CuPy refuses host 0-d arrays."""
    if not any(isinstance(a, (np.generic, int, float)) for a in saved):
        return saved
    xp = get_array_module(like)
    return tuple(xp.asarray(a) if isinstance(a, (np.generic, int, float)) else a for a in saved)


def _describe_saved(saved, inputs, results) -> list:
    """For each saved array: where it came from (input Tensor, output index, or elsewhere)
    and the version counter to check in backward."""
    info = []
    for arr in saved:
        entry = (None, None, 0)
        if arr is None:
            info.append(entry)
            continue
        for x in inputs:
            if isinstance(x, Tensor) and x.data is arr:
                entry = (x, x._vc, x._vc[0])
                break
        else:
            for i, r in enumerate(results):
                if r.data is arr:
                    entry = (i, r._vc, r._vc[0])
                    break
        info.append(entry)
    return info


class once_differentiable:  # noqa: N801
    """Marks a backward that is not itself differentiable. Under create_graph its gradients
    carry a node that raises, so only a real double backward through it fails (as in torch)."""

    def __init__(self, backward):
        self._backward = backward

    def __set_name__(self, owner, name):
        self._owner = owner

    def __get__(self, obj, objtype=None):
        fn = self._backward.__get__(obj, objtype)
        if obj is None:
            return fn

        def backward(*grads):
            if state.enabled and any(g is not None and g.requires_grad for g in grads):
                state.enabled = False
                try:
                    out = fn(*grads)
                finally:
                    state.enabled = True
                single = not isinstance(out, (tuple, list))
                delayed = [
                    None if o is None else _DelayedError(obj.name()).wrap(o)
                    for o in ((out,) if single else out)
                ]
                return delayed[0] if single else tuple(delayed)
            return fn(*grads)

        return backward


class _DelayedError(Function):
    """The creator of a once_differentiable gradient under create_graph: backward raises."""

    def __init__(self, op: str):
        self.op = op

    def wrap(self, t: Tensor) -> Tensor:
        self.next_edges, self._n_outputs = [], 1
        return Tensor(t.data, True, self, 0)

    def backward(self, *grads):
        raise RuntimeError(
            f"{self.op}: this op's backward is not differentiable; double "
            "backward (create_graph=True) through it is not supported"
        )
