"""The Tensor: one array (NumPy or CuPy) plus what autograd needs to know about it.

Only the state and the methods that need no op live here. The op library installs the
arithmetic, reductions, shape ops and ``backward`` as methods (``ember.ops.methods``), which
keeps this layer free of imports from above it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import device_of, get_array_module


class Tensor:
    """A multi-dimensional array that can record the operations applied to it."""

    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "grad_fn",
        "_output_nr",
        "_vc",
        "_base",
        "_hooks",
        "_retains_grad",
        "_post_acc_hooks",
        "__weakref__",
    )
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operators
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, grad_fn=None, output_nr: int = 0):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.grad_fn = grad_fn
        self._output_nr = output_nr
        self._vc = [0]  # version counter, shared with views
        self._base = None
        self._hooks = None
        self._retains_grad = False
        self._post_acc_hooks = None

    # ----------------------------------------------------------------- metadata
    @property
    def shape(self) -> tuple:
        return Size(self.data.shape)

    def size(self, dim: int | None = None):
        if dim is None:
            return Size(self.data.shape)
        return self.data.shape[normalize_dim(dim, self.data.ndim, "size")]

    @property
    def dtype(self) -> dtypes.dtype:
        return dtypes.from_numpy_dtype(self.data.dtype)

    @property
    def device(self):
        return device_of(self.data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    ndimension = dim

    def numel(self) -> int:
        return int(self.data.size)

    nelement = numel

    def element_size(self) -> int:
        return self.data.itemsize

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def itemsize(self) -> int:
        return self.data.itemsize

    def is_floating_point(self) -> bool:
        return self.data.dtype in dtypes.FLOATING_NP

    def is_contiguous(self) -> bool:
        return bool(self.data.flags.c_contiguous)

    def stride(self, dim: int | None = None):
        st = tuple(s // self.data.itemsize for s in self.data.strides)
        return st if dim is None else st[normalize_dim(dim, self.data.ndim, "stride")]

    def data_ptr(self) -> int:
        if type(self.data) is np.ndarray:
            return self.data.__array_interface__["data"][0]
        return self.data.data.ptr

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        return self._vc[0]

    def _bump_version(self) -> None:
        self._vc[0] += 1

    # ---------------------------------------------------------- plain conversions
    def item(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"item: a Tensor with {self.data.size} elements cannot be converted to a Scalar"
            )
        return (
            self.data.reshape(()).item()
            if type(self.data) is np.ndarray
            else (self.data.reshape(()).get().item())
        )

    def tolist(self):
        return self.numpy(force=True).tolist()  # torch allows it on tensors requiring grad

    def numpy(self, force: bool = False) -> np.ndarray:
        if self.requires_grad and not force:
            raise RuntimeError(
                "numpy: can't call numpy() on a Tensor that requires grad. "
                "Use tensor.detach().numpy() instead."
            )
        if type(self.data) is np.ndarray:
            return self.data
        return self.data.get()

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy(force=True)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def _scalar_value(self, what: str):
        if self.data.size != 1:
            raise RuntimeError(
                f"{what}: only a Tensor with one element can be converted, got shape "
                f"{tuple(self.data.shape)}"
            )
        return self.item()

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {self.data.size} elements is ambiguous"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self._scalar_value("float()"))

    def __int__(self) -> int:
        return int(self._scalar_value("int()"))

    def __index__(self) -> int:
        if self.data.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    __hash__ = object.__hash__

    # ------------------------------------------------------------ autograd state
    def detach(self) -> Tensor:
        """A tensor that shares this one's data (and version counter) but no history."""
        out = Tensor(self.data)
        out._vc = self._vc
        out._base = self if self._base is None else self._base
        return out

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad_: you can only change requires_grad flags of leaf variables. "
                "Use detach() for a non-leaf tensor."
            )
        if requires_grad and self.data.dtype not in dtypes.FLOATING_NP:
            raise RuntimeError(
                f"requires_grad_: only Tensors of floating point dtype can require gradients, "
                f"got {self.dtype}"
            )
        self.requires_grad = requires_grad
        return self

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a new one."""
        if not self.requires_grad:
            raise RuntimeError(
                "register_hook: cannot register a hook on a tensor that doesn't require gradient"
            )
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            hooks = self.grad_fn._tensor_hooks(self._output_nr)
        hooks.append(hook)
        return _RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` on a leaf once backward has accumulated its final ``.grad``
        for the pass (while the rest of backward still runs: DDP starts allreduces here)."""
        if not self.requires_grad:
            raise RuntimeError(
                "register_post_accumulate_grad_hook: cannot register a hook on "
                "a tensor that doesn't require gradient"
            )
        if self.grad_fn is not None:
            raise RuntimeError(
                "post accumulate grad hooks cannot be registered on non-leaf tensors"
            )
        if self._post_acc_hooks is None:
            self._post_acc_hooks = []
        self._post_acc_hooks.append(hook)
        return _RemovableHandle(self._post_acc_hooks, hook)

    def retain_grad(self) -> None:
        """Keep ``.grad`` for a non-leaf tensor after backward (leaves always keep theirs)."""
        if not self.requires_grad:
            raise RuntimeError(
                "retain_grad: can't retain_grad on Tensor that has requires_grad=False"
            )
        if self.grad_fn is None or self._retains_grad:
            return
        self._retains_grad = True
        ref = weakref.ref(self)
        self.grad_fn._retain_hooks(self._output_nr).append(ref)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    # ------------------------------------------------------------------- printing
    def __repr__(self) -> str:
        return format_tensor(self)

    def __str__(self) -> str:
        return format_tensor(self)

    def __format__(self, spec: str) -> str:
        if self.data.ndim == 0 and spec:
            return format(self.item(), spec)
        return format_tensor(self)

    def __reduce_ex__(self, protocol):
        raise TypeError("Ember tensors are not picklable: use ember.save (safetensors + JSON)")

    def __deepcopy__(self, memo):
        out = Tensor(self.data.copy(), requires_grad=self.requires_grad)
        if self.grad is not None:
            out.grad = Tensor(self.grad.data.copy())
        memo[id(self)] = out
        return out


class Size(tuple):
    """``tensor.shape``: a tuple that prints like ``ember.Size([2, 3])``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ember.Size({list(self)})"

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n


class _RemovableHandle:
    __slots__ = ("_hooks", "_hook")

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def normalize_dim(dim: int, ndim: int, op: str) -> int:
    """Wrap a negative dim; an out-of-range dim names the op, the dim and the ndim."""
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= dim <= hi:
        raise IndexError(
            f"{op}: Dimension out of range (expected to be in range of [{lo}, {hi}], "
            f"but got {dim}) for a tensor with ndim {ndim}"
        )
    return dim % ndim if ndim else 0


def format_tensor(t: Tensor) -> str:
    """PyTorch-like repr: ``tensor([1., 2.], dtype=ember.float64, grad_fn=<AddBackward>)``."""
    arr = t.data if type(t.data) is np.ndarray else t.data.get()
    dt = dtypes.from_numpy_dtype(arr.dtype)
    shown = arr.astype(np.float32) if dt in (dtypes.bfloat16, dtypes.float16) else arr
    # torch wraps each innermost row at 79 characters (comma included) at any depth
    opts = {"separator": ", ", "prefix": "tensor(", "max_line_width": 81}
    part = _edges(shown)  # as torch, format from the elements that are shown
    if dt.is_floating_point and _int_mode(part):
        finite = part[np.isfinite(part) & (part != 0)]
        width = max((len(_int_str(v)) for v in finite), default=1)  # torch pads to these
        body = np.array2string(
            shown, **opts, formatter={"float_kind": lambda v: _int_str(v).rjust(width)}
        )
    elif dt.is_floating_point:  # NumPy's switch to scientific notation is torch's
        body = np.array2string(shown, **opts, precision=4, floatmode="fixed")
    elif dt is dtypes.bool_:
        width = 4 if part.all() else 5
        body = np.array2string(
            shown, **opts, formatter={"bool": lambda v: str(bool(v)).rjust(width)}
        )
    else:
        body = np.array2string(shown, **opts)
    body = body.replace(", ...,", ",  ...,")  # torch pads the ellipsis
    extras = []
    if arr.size == 0 and arr.ndim != 1:
        extras.append(f"size={tuple(arr.shape)}")
    if arr.size == 0 and dt is not dtypes.get_default_dtype():
        extras.append(f"dtype={dt!r}")  # nothing in an empty tensor shows its dtype
    if t.device.type != "cpu":
        extras.append(f"device='{t.device}'")
    implied = dtypes.get_default_dtype() if dt.is_floating_point else (dtypes.int64, dtypes.bool_)
    if arr.size and dt is not implied and (dt.is_floating_point or dt not in implied):
        extras.append(f"dtype={dt!r}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    tail = "".join(", " + e for e in extras)
    return f"tensor({body}{tail})"


def _edges(arr):
    """The part of a summarised (> 1000 elements) array that printing shows."""
    if arr.size <= 1000:
        return arr
    for ax, n in enumerate(arr.shape):
        if n > 6:
            arr = np.take(arr, [0, 1, 2, n - 3, n - 2, n - 1], axis=ax)
    return arr


def _int_mode(arr) -> bool:
    """torch prints ``1.`` style when every nonzero finite value is integral and their range
    is small (max <= 1e8, max/min <= 1000); otherwise 4 decimals or scientific notation."""
    if not arr.size:
        return False
    vals = np.abs(arr[np.isfinite(arr) & (arr != 0)])
    if not vals.size:
        return True
    return bool(
        np.all(vals == np.round(vals)) and vals.max() <= 1e8 and vals.max() / vals.min() <= 1000
    )


def _int_str(v) -> str:
    return f"{v:.0f}." if np.isfinite(v) else f"{v}"


def writable(arr) -> bool:
    """False for memory shared by several elements. CuPy has no ``writeable`` flag (every
    view is writable), so there an expanded view is found by its zero strides."""
    if type(arr) is np.ndarray:
        return arr.flags.writeable
    return not any(st == 0 and n > 1 for st, n in zip(arr.strides, arr.shape))


def write_into(t: Tensor, result, op: str) -> None:
    """Copy ``result`` into ``t``'s array with PyTorch's in-place shape and dtype rules."""
    if result.shape != t.data.shape:
        raise RuntimeError(
            f"{op}: output with shape {list(t.data.shape)} doesn't match the broadcast shape "
            f"{list(result.shape)}"
        )
    src = dtypes.from_numpy_dtype(result.dtype)
    dst = dtypes.from_numpy_dtype(t.data.dtype)
    if src.category > dst.category:
        raise RuntimeError(
            f"{op}: result type {src.name} can't be cast to the desired output type {dst.name}"
        )
    if not writable(t.data):
        raise RuntimeError(
            f"{op}: unsupported operation: the tensor's memory is shared by several elements "
            "(it is an expanded view); clone() it before writing in place"
        )
    get_array_module(t.data).copyto(t.data, result, casting="unsafe")
    t._vc[0] += 1
