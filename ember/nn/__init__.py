"""``ember.nn``: Module, Parameter, containers and init, with torch.nn's names and semantics."""

from ember.nn import init as init
from ember.nn.containers import (
    Flatten,
    Identity,
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    Sequential,
    Unflatten,
)
from ember.nn.module import Module
from ember.nn.parameter import Parameter

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
    "ParameterDict", "Identity", "Flatten", "Unflatten", "init",
]
