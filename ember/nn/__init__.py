"""``ember.nn``: Module, Parameter, containers and init, with torch.nn's names and semantics."""

from ember.nn import functional as functional
from ember.nn import init as init
from ember.nn import layers as _layers
from ember.nn import utils as utils
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

globals().update({name: getattr(_layers, name) for name in _layers.__all__})

__all__ = [
    "Module",
    "Parameter",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "ParameterList",
    "ParameterDict",
    "Identity",
    "Flatten",
    "Unflatten",
    "init",
    "functional",
] + list(_layers.__all__)
