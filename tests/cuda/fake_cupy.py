"""A NumPy-backed stand-in for CuPy, so the CPU test suite can walk Ember's device paths.

It is not a GPU emulator: it reproduces the *boundary* CuPy draws between host and device.
Its ``ndarray`` is a distinct type that wraps a NumPy array and

- refuses implicit conversion to NumPy (``np.asarray(x)``, ``np.array(x)``, buffer protocol)
  with CuPy's own message, so an ``np.`` call on device data fails as on a real GPU;
- dispatches NumPy ufuncs and functions called on it (``__array_ufunc__`` /
  ``__array_function__``) to its own namespace, as CuPy does, and rejects host arrays mixed
  into device operations (``Unsupported type <class 'numpy.ndarray'>``);
- returns 0-d device arrays from reductions and ``x[i]`` (CuPy never hands back NumPy scalars).

``install(monkeypatch)`` puts it in place as ``ember.tensor.backend._cupy`` (and ``cupy`` /
``cupyx`` in ``sys.modules``). Kernels (``RawModule``, ``RawKernel``, ``ElementwiseKernel``)
cannot run here: they raise ``FakeKernelError`` so the composite paths are the ones tested.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from tests.cuda.fake_cupy_cuda import (
    _CurandHandle,
    _Device,
    cuda_namespace,
    cupyx_namespace,
)

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)
_HOST_OK = {"asarray", "array", "asanyarray"}  # the functions that take host data


class FakeKernelError(RuntimeError):
    """A raw CUDA kernel was asked to run on the fake device."""


class _Pointer:
    def __init__(self, arr: np.ndarray):
        self.ptr = arr.__array_interface__["data"][0]


def _unwrap(x, fn: str):
    """Device -> inner NumPy array; host arrays are an error, as in CuPy."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        if fn in _HOST_OK:
            return x
        raise TypeError(f"Unsupported type {type(x)} (in cupy.{fn})")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, fn) for v in x)
    return x


class _Flags:
    """CuPy's flags: contiguity and ownership only (no ``writeable``: every view is)."""

    def __init__(self, a: np.ndarray):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, name):
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous"}
        if name not in key and name != "OWNDATA":
            raise KeyError(f"{name} is not defined for cupy.ndarray.flags")
        return getattr(self, key.get(name, "owndata"))


def _wrap(x):
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # CuPy views (diagonal, broadcast) are all writable
            try:
                x.flags.writeable = True
            except ValueError:
                pass
        return ndarray(x)
    if isinstance(x, np.generic) and not isinstance(x, np.dtype):
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _check_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind in "USM":  # bfloat16 is in (CuPy 14, ml_dtypes)
        raise ValueError(f"Unsupported dtype {arr.dtype}")
    return arr


def _call(fn_name: str, fn, args, kwargs):
    a = _unwrap(args, fn_name)
    k = {key: _unwrap(v, fn_name) for key, v in kwargs.items()}
    if "out" in k and isinstance(kwargs["out"], ndarray):
        fn(*a, **k)
        return kwargs["out"]
    return _wrap(fn(*a, **k))


class ndarray:  # noqa: N801 - mirrors cupy.ndarray
    """A device array: a NumPy array behind CuPy's host/device wall."""

    __array_priority__ = 100
    __slots__ = ("_a",)

    def __init__(self, shape=None, dtype=float, *, _arr=None):
        if isinstance(shape, np.ndarray):
            _arr, shape = shape, None
        self._a = _check_dtype(_arr if _arr is not None else np.empty(shape, dtype))

    # ---- the wall
    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return getattr(_ufuncs[ufunc.__name__], method)(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        impl = _NAMESPACE.get(func.__name__)
        if impl is None:
            return NotImplemented
        return impl(*args, **kwargs)

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is not None:
            np.copyto(out, self._a)
            return out
        return self._a.copy()

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError("set: expected numpy.ndarray")
        np.copyto(self._a, arr)
        if stream is not None and stream.ptr:
            stream.copies += 1  # an upload on a side stream (the tests count them)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3}

    # ---- attributes
    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    strides = property(lambda s: s._a.strides)
    itemsize = property(lambda s: s._a.itemsize)
    nbytes = property(lambda s: s._a.nbytes)
    flags = property(lambda s: _Flags(s._a))
    T = property(lambda s: ndarray(s._a.T))
    mT = property(lambda s: ndarray(s._a.mT))  # noqa: N815 - numpy's name
    real = property(lambda s: ndarray(s._a.real))
    device = property(lambda s: _Device(0))
    data = property(lambda s: _Pointer(s._a))

    @property
    def base(self):
        return None if self._a.base is None else ndarray(self._a.base)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__, __array_struct__, buffer...
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _call(f"ndarray.{name}", attr, args, kwargs)

        return method

    # ---- Python protocol
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return repr(self._a).replace("array", "fakecupy.array", 1)

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):  # host values and indices are copied over, as in CuPy
        self._a[_index(key)] = value._a if isinstance(value, ndarray) else value

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def __reduce__(self):
        raise TypeError("fake cupy arrays are not picklable here")


def _index(key):
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(k._a if isinstance(k, ndarray) else k for k in key)
    return key


_BINARY = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "truediv": "true_divide",
    "floordiv": "floor_divide",
    "mod": "remainder",
    "pow": "power",
    "matmul": "matmul",
    "and": "bitwise_and",
    "or": "bitwise_or",
    "xor": "bitwise_xor",
    "lshift": "left_shift",
    "rshift": "right_shift",
    "lt": "less",
    "le": "less_equal",
    "gt": "greater",
    "ge": "greater_equal",
    "eq": "equal",
    "ne": "not_equal",
}


def _install_operators():
    def binary(ufunc_name, reflected=False, inplace=False):
        def op(self, other):
            if isinstance(other, np.ndarray):
                raise TypeError(f"Unsupported type {type(other)}")
            if isinstance(other, (list, tuple)):
                return NotImplemented
            o = other._a if isinstance(other, ndarray) else other
            uf = getattr(np, ufunc_name)
            if inplace:
                uf(self._a, o, out=self._a)
                return self
            return _wrap(uf(o, self._a) if reflected else uf(self._a, o))

        return op

    for name, uf in _BINARY.items():
        setattr(ndarray, f"__{name}__", binary(uf))
        if name not in ("lt", "le", "gt", "ge", "eq", "ne"):
            setattr(ndarray, f"__r{name}__", binary(uf, reflected=True))
            setattr(ndarray, f"__i{name}__", binary(uf, inplace=True))
    for name, uf in (("neg", "negative"), ("pos", "positive"), ("abs", "absolute")):
        setattr(ndarray, f"__{name}__", lambda self, _u=uf: _wrap(getattr(np, _u)(self._a)))
    ndarray.__invert__ = lambda self: _wrap(np.invert(self._a))
    ndarray.__divmod__ = lambda self, o: (self // o, self % o)
    ndarray.__rdivmod__ = lambda self, o: (o // self, o % self)
    ndarray.__hash__ = None


_install_operators()


class _Ufunc:
    def __init__(self, uf: np.ufunc):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __call__(self, *args, **kwargs):
        return _call(self.__name__, self._uf, args, kwargs)

    def reduce(self, *args, **kwargs):
        return _call(self.__name__ + ".reduce", self._uf.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _call(self.__name__ + ".accumulate", self._uf.accumulate, args, kwargs)

    def reduceat(self, *args, **kwargs):
        return _call(self.__name__ + ".reduceat", self._uf.reduceat, args, kwargs)

    def outer(self, *args, **kwargs):
        return _call(self.__name__ + ".outer", self._uf.outer, args, kwargs)

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)} (in {self.__name__}.at)")
        idx = _index(indices)  # host index arrays are copied over, as CuPy's indexing does
        if b is None:
            self._uf.at(a._a, idx)
        else:
            self._uf.at(a._a, idx, _unwrap(b, "at"))


_ufuncs = {n: _Ufunc(getattr(np, n)) for n in dir(np) if isinstance(getattr(np, n), np.ufunc)}


def _function(name: str, fn):
    def wrapper(*args, **kwargs):
        return _call(name, fn, args, kwargs)

    wrapper.__name__ = name
    return wrapper


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        return ndarray(np.array(obj._a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    return ndarray(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(out=out)
    return np.asarray(a)


def get_array_module(*args):
    for a in args:
        if isinstance(a, ndarray):
            return _module
    return np


def copyto(dst, src, casting="same_kind", where=None):
    if isinstance(src, np.ndarray) and src.size != 1:
        raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
    if not isinstance(dst, ndarray):
        raise TypeError(f"Unsupported type {type(dst)} (in cupy.copyto)")
    s = src._a if isinstance(src, ndarray) else src
    if where is None:
        np.copyto(dst._a, s, casting=casting)
    else:
        np.copyto(dst._a, s, casting=casting, where=_unwrap(where, "copyto"))


def _kernel(*args, **kwargs):
    raise FakeKernelError("raw CUDA kernels cannot run on the fake CuPy device")


class _KernelType:
    def __init__(self, *args, **kwargs):
        _kernel()


# ------------------------------------------------------------------------------ cuda namespace
class RandomState:
    """cuRAND-like: the stream is a pure function of (seed, offset); offset moves with draws."""

    def __init__(self, seed=None, method=100):
        self._generator = _CurandHandle(0 if seed is None else seed)

    def _rng(self, words: int):
        g = self._generator
        bg = np.random.Philox(key=g.seed & ((1 << 128) - 1))
        bg.advance(g.offset)
        g.offset += words
        return np.random.Generator(bg)

    def random_sample(self, size=None, dtype=float):
        n = int(np.prod(size or ()))
        return ndarray(self._rng(n).random(size, dtype=np.dtype(dtype).type))

    def standard_normal(self, size=None, dtype=float):
        n = int(np.prod(size or ()))
        return ndarray(self._rng(n).standard_normal(size, dtype=np.dtype(dtype).type))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        u = self.random_sample(size, dtype)
        return u * (high - low) + low


def _random_namespace():
    mod = types.ModuleType("fake_cupy.random")
    mod.RandomState = RandomState
    mod._state = RandomState(0)
    mod.seed = lambda seed=None: setattr(mod, "_state", RandomState(seed))
    mod.random = lambda size=None, dtype=float: mod._state.random_sample(size, dtype)
    mod.standard_normal = lambda size=None, dtype=float: mod._state.standard_normal(size, dtype)
    return mod


class _Namespace(types.ModuleType):
    """Wraps a NumPy (sub)module: functions take and give device arrays."""

    def __init__(self, name, np_mod, extra=None):
        super().__init__(name)
        self._np = np_mod
        self.__dict__.update(extra or {})

    def __getattr__(self, name):
        attr = getattr(self._np, name)
        if isinstance(attr, np.ufunc):
            out = _ufuncs[name]
        elif isinstance(attr, type) or not callable(attr):
            if isinstance(attr, types.ModuleType):
                out = _Namespace(f"{self.__name__}.{name}", attr)
            else:
                out = attr
        else:
            out = _function(name, attr)
        setattr(self, name, out)
        return out


_NAMESPACE: dict = {}
_module = _Namespace(
    "fake_cupy",
    np,
    {
        "ndarray": ndarray,
        "asarray": asarray,
        "array": array,
        "asnumpy": asnumpy,
        "get_array_module": get_array_module,
        "copyto": copyto,
        "RawModule": _KernelType,
        "RawKernel": _KernelType,
        "ElementwiseKernel": _KernelType,
        "ReductionKernel": _KernelType,
        "fuse": lambda *a, **k: _kernel,
        "__fake__": True,
        "__version__": "13.6.0+fake",
    },
)
_module.cuda = cuda_namespace()
_module.random = _random_namespace()
_module.fft = _Namespace("fake_cupy.fft", np.fft)
_module.linalg = _Namespace("fake_cupy.linalg", np.linalg)
_module.lib = _Namespace("fake_cupy.lib", np.lib)


class _FunctionTable(dict):
    def get(self, name, default=None):
        if name in ("asarray", "array", "copyto", "get_array_module"):
            return getattr(_module, name)
        try:
            fn = getattr(_module, name)
        except AttributeError:
            return default
        return fn if callable(fn) else default


_NAMESPACE = _FunctionTable()
cupyx = cupyx_namespace(lambda a, slices, value: _ufuncs["add"].at(a, slices, value))


def module():
    return _module


def install(monkeypatch) -> types.ModuleType:
    """Make the fake the CuPy Ember sees, for the duration of one test."""
    from ember.tensor import backend

    monkeypatch.setenv("EMBER_CUDA_KERNELS", "0")  # kernels need a GPU: test the composites
    monkeypatch.setattr(backend, "_cupy", _module)
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(backend, "_copy_streams", {})
    monkeypatch.setattr(backend, "_inflight", [])
    monkeypatch.setitem(sys.modules, "cupy", _module)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupy.cuda", _module.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", _module.cuda.nccl)
    monkeypatch.setattr(_module.cuda.nccl, "calls", [])
    return _module
