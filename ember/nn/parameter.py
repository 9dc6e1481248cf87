"""``Parameter``: a Tensor that a Module registers as a learnable weight when assigned to it.

It shares the array (and the version counter) of the tensor it wraps, as ``torch.nn.Parameter``
does, and requires grad by default. Ops treat it as a plain Tensor (they test ``isinstance``);
results of ops on a Parameter are plain Tensors.
"""

from __future__ import annotations

import numpy as np

from ember.tensor import dtypes
from ember.tensor.tensor import Tensor, format_tensor


class Parameter(Tensor):
    """A leaf Tensor that Modules pick up in ``parameters()`` and ``state_dict()``.

    Unlike Tensor it has a ``__dict__``, so code can tag parameters (``p.no_decay = True``).
    """

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            arr = np.empty((0,), dtype=dtypes.get_default_dtype().np)
            vc = [0]
        elif isinstance(data, Tensor):
            arr, vc = data.data, data._vc
        elif isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__"):
            arr, vc = data, [0]
        else:
            raise TypeError(f"Parameter: expected a Tensor as data, got {type(data).__name__}")
        super().__init__(arr)
        self._vc = vc
        if requires_grad:
            self.requires_grad_(True)  # raises for integer dtypes, as torch does

    def __repr__(self) -> str:
        return "Parameter containing:\n" + format_tensor(self)

    __str__ = __repr__

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        out = Parameter(self.data.copy(), self.requires_grad)
        if self.grad is not None:
            out.grad = Tensor(self.grad.data.copy())
        if self.__dict__:
            import copy

            out.__dict__.update(copy.deepcopy(self.__dict__, memo))
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, protocol):
        raise TypeError("Ember parameters are not picklable: use ember.save (safetensors + JSON)")
