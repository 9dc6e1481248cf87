"""``Optimizer``: the base of every optimizer, with torch.optim's param groups, state and
state-dict layout.

Built-in optimizers describe only their arithmetic: the state they keep
(``_state_names``, ``_init_state``) and a kernel factory (``_make_kernel``) that returns a
function updating raw arrays in place. This base runs the kernel either per parameter or
over the flat multi-tensor layout of ``ember.optim.foreach`` (``foreach=True``, or by
default where that measures faster). Subclasses written the torch way (overriding ``step``)
work too: their ``step`` gets the hooks wrapped around it.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from ember.autograd.grad_mode import enable_grad
from ember.nn.hooks import RemovableHandle, add_hook
from ember.optim.foreach import FlatBucket, Workspace, run_kernel
from ember.tensor.backend import get_array_module, to_backend
from ember.tensor.dtypes import FLOATING_NP
from ember.tensor.tensor import Tensor

# With foreach=None the flat path is used for NumPy groups whose parameters average fewer
# elements than this (measured on 2 cores: at ~100k elements per tensor the saved call
# overhead equals the cost of gathering the grads; see the issue-4 report).
FLAT_AUTO_MAX_MEAN = 1 << 16


class _RequiredParameter:
    """Marks a hyperparameter a param group must give (torch.optim.optimizer.required)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

_SET_MESSAGE = (
    "optimizer parameters need to be organized in ordered collections, but the "
    "ordering of tensors in sets will change between runs. Please use a list "
    "instead."
)


def _hooked(step):
    """Wrap an optimizer's ``step`` with its pre/post hooks (once, even under super().step)."""

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if getattr(self, "_in_step", False):
            return step(self, *args, **kwargs)
        self._in_step = True
        try:
            for hook in tuple(self._step_pre_hooks.values()):
                res = hook(self, args, kwargs)
                if res is None:
                    continue
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(
                        f"{hook} must return None or a tuple of (new_args, "
                        f"new_kwargs), but got {res}."
                    )
                args, kwargs = res
            self._opt_called = True
            out = step(self, *args, **kwargs)
            for hook in tuple(self._step_post_hooks.values()):
                hook(self, args, kwargs)
            return out
        finally:
            self._in_step = False

    wrapper._ember_hooked = True
    return wrapper


class Optimizer:
    """Base class for all optimizers: ``param_groups``, per-parameter ``state``,
    ``zero_grad``, ``step``, ``state_dict`` / ``load_state_dict`` and step hooks."""

    # --- what a built-in optimizer defines (see SGD, Adam, ...) ---
    _uses_step = False  # keeps a 0-d float32 'step' tensor per parameter
    _n_scratch = 2  # scratch arrays its kernel needs

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        self._step_pre_hooks: OrderedDict = OrderedDict()
        self._step_post_hooks: OrderedDict = OrderedDict()
        self._workspace = Workspace()
        self._flat_cache: dict = {}
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {_typename(params)}"
            )
        if isinstance(params, Mapping) or not isinstance(params, Iterable):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {_typename(params)}"
            )
        if isinstance(params, (set, frozenset)):  # torch only catches sets inside groups
            raise TypeError(_SET_MESSAGE)
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_ember_hooked", False):
            cls.step = _hooked(step)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # ---------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group (a dict with 'params' and optional per-group hyperparameters)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {_typename(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(_SET_MESSAGE)
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param "
                    "names are missing"
                )
            param_group["param_names"] = names
        param_group["params"] = params
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is {_typename(p)}"
                )
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    "parameter group didn't specify a value of required "
                    f"optimization parameter {name}"
                )
            param_group.setdefault(name, default)
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen: set = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {'with' if names else 'without'} "
                    "names to the optimizer"
                )
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ------------------------------------------------------------------ gradients
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter: drop them (default) or zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad = False
                p.grad.zero_()

    # ----------------------------------------------------------------------- step
    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (re-evaluated with
        grad enabled) recomputes and returns the loss."""
        if type(self)._make_kernel is Optimizer._make_kernel:
            raise NotImplementedError(f"{type(self).__name__} does not implement step()")
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with np.errstate(all="ignore"):  # NaN / inf propagate silently, as in torch
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _state_names(self, group: dict) -> tuple:
        """The state arrays the kernel takes after (param, grad), in order."""
        return ()

    def _needs_init(self, group: dict, state: dict) -> bool:
        return len(state) == 0

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        """Fill a new parameter's state, keys in torch's order."""

    def _make_kernel(self, group: dict, step, fresh: bool, xp):
        """``kernel(param, grad, *state, *scratch)`` updating raw arrays in place."""
        raise NotImplementedError

    def _step_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        names = self._state_names(group)
        if self._want_flat(group, params):
            buckets: dict = {}
            for p in params:
                arr = p.data
                key = (type(arr), arr.dtype.str, getattr(arr, "device", None))
                buckets.setdefault(key, []).append(p)
            params = []
            for key, ps in buckets.items():
                if not self._flat_step(group, key, ps, names):
                    params.extend(ps)
        stateful = bool(names) or self._uses_step
        for p in params:
            self._param_step(group, p, names, stateful)

    def _want_flat(self, group: dict, params: list) -> bool:
        foreach = group.get("foreach")
        if foreach is None and group.get("fused"):
            foreach = True
        if foreach is not None:
            return bool(foreach)
        if len(params) < 2:
            return False
        if get_array_module(params[0].data) is not np:
            return True  # on a GPU every kernel launch costs ~10 us: flat always wins
        total = sum(p.data.size for p in params)
        return total < FLAT_AUTO_MAX_MEAN * len(params)

    def _param_step(self, group: dict, p: Tensor, names: tuple, stateful: bool) -> None:
        fresh, step, arrays = False, None, [p.data, _grad_of(p)]
        if stateful:
            state = self.state[p]
            fresh = self._needs_init(group, state)
            if fresh:
                self._init_state(group, p, state)
            if self._uses_step:
                s = state["step"].data
                s += 1
                step = float(s)
            arrays += [state[n].data for n in names]
        kernel = self._make_kernel(group, step, fresh, get_array_module(p.data))
        run_kernel(kernel, arrays, self._n_scratch, self._workspace)
        p._vc[0] += 1

    def _flat_step(self, group: dict, key, params: list, names: tuple) -> bool:
        """One kernel run over the group's flat buffers; False when the layout does not apply
        this step (mixed fresh state or unequal step counts), so the caller goes per param."""
        if names or self._uses_step:
            states = [self.state[p] for p in params]
            fresh = [self._needs_init(group, st) for st in states]
        else:  # stateless (plain SGD): leave self.state untouched, as torch does
            states, fresh = [{} for _ in params], [False]
        if any(fresh):
            if not all(fresh):
                return False
            for p, st in zip(params, states):
                self._init_state(group, p, st)
        entry = self._flat_cache.get((id(group), key))
        bucket = entry[1] if entry is not None and entry[0] is group else None
        if bucket is None or bucket.names != names or not bucket.valid(params, states):
            if not FlatBucket.supports(params, states, names):
                return False
            bucket = FlatBucket(params, states, names, self._uses_step)
            self._flat_cache[(id(group), key)] = (group, bucket)
        step = None
        if self._uses_step:
            steps = bucket.steps
            if steps.size > 1 and not (steps == steps[0]).all():
                return False
            steps += 1
            step = float(steps[0])
        kernel = self._make_kernel(group, step, fresh[0], get_array_module(bucket.flat))
        arrays = [bucket.flat, bucket.gather_grads()] + [bucket.state_flat[n] for n in names]
        run_kernel(kernel, arrays, self._n_scratch, self._workspace)
        for p in params:
            p._vc[0] += 1
        return True

    # ---------------------------------------------------------------- state dicts
    def state_dict(self) -> dict:
        """torch's layout: ``{'state': {index: {name: tensor or number}}, 'param_groups':
        [{hyperparameters..., 'params': [indices]}]}``; the tensors are the live state."""
        mapping: dict = {}
        groups = []
        start = 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore groups and state saved by ``state_dict`` (possibly through ember.save /
        ember.load). State arrays are copied to each parameter's device and float dtype."""
        if (
            not isinstance(state_dict, Mapping)
            or "param_groups" not in state_dict
            or ("state" not in state_dict)
        ):
            raise ValueError(
                "load_state_dict: expected a dict with 'state' and 'param_groups', "
                f"got {_typename(state_dict)}"
            )
        groups = self.param_groups
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, s in zip(groups, saved_groups):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't "
                    "match the size of optimizer's group"
                )
        id_map = dict(
            zip(
                itertools.chain.from_iterable(g["params"] for g in saved_groups),
                itertools.chain.from_iterable(g["params"] for g in groups),
            )
        )
        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            idx = int(k) if isinstance(k, str) and k.isdigit() else k
            if idx in id_map:
                param = id_map[idx]
                state[param] = _cast_state(param, v)
            else:
                state[k] = v
        new_groups = []
        for g, s in zip(groups, saved_groups):
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            if isinstance(s.get("betas"), list):
                s["betas"] = tuple(s["betas"])
            new_groups.append(s)
        self.state = state
        self.param_groups = new_groups
        self._flat_cache.clear()

    # ---------------------------------------------------------------------- hooks
    def register_step_pre_hook(self, hook) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` before each step; it may return new
        ``(args, kwargs)``."""
        return add_hook(self._step_pre_hooks, hook, False)

    def register_step_post_hook(self, hook) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` after each step."""
        return add_hook(self._step_post_hooks, hook, False)


Optimizer.step = _hooked(Optimizer.step)


def _grad_of(p: Tensor):
    g = p.grad.data
    return g if g.dtype == p.data.dtype else g.astype(p.data.dtype)


def _cast_state(param: Tensor, value, key=None):
    """A copy of a loaded state value: arrays on the parameter's device (and in its dtype
    when it is floating point); 'step' always a 0-d float32 tensor on the CPU."""
    if key == "step" and isinstance(value, (Tensor, np.ndarray, int, float, np.generic)):
        arr = value.data if isinstance(value, Tensor) else value
        return Tensor(np.array(float(arr), dtype=np.float32))
    if isinstance(value, (Tensor, np.ndarray)) or hasattr(value, "__cuda_array_interface__"):
        arr = value.data if isinstance(value, Tensor) else value
        arr = to_backend(arr, param.device)
        dtype = param.data.dtype if param.data.dtype in FLOATING_NP else arr.dtype
        return Tensor(arr.astype(dtype, copy=True))
    if isinstance(value, Mapping):
        return {k: _cast_state(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v) for v in value)
    return value


def _typename(obj) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
