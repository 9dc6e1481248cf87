"""The indexing family: ``tensor[key]``, ``tensor[key] = v``, iteration, and the index-driven
ops (gather, scatter, index_select, masked_fill, ...). The code lives in ``getitem`` and
``gather_scatter``; this module registers it."""

from __future__ import annotations

from ember.ops import gather_scatter as gs
from ember.ops.getitem import getitem, iterate, setitem

METHODS = {
    "__getitem__": getitem,
    "__setitem__": setitem,
    "__iter__": iterate,
    "gather": gs.gather,
    "scatter": gs.scatter,
    "scatter_add": gs.scatter_add,
    "index_select": gs.index_select,
    "index_add": gs.index_add,
    "index_fill": gs.index_fill,
    "masked_fill": gs.masked_fill,
    "masked_select": gs.masked_select,
    "take_along_dim": gs.take_along_dim,
    "take": gs.take,
    "nonzero": gs.nonzero,
    "argwhere": gs.argwhere,
}
FUNCTIONS = {
    "gather": gs.gather,
    "scatter": gs.scatter,
    "scatter_add": gs.scatter_add,
    "index_select": gs.index_select,
    "index_add": gs.index_add,
    "index_fill": gs.index_fill,
    "masked_fill": gs.masked_fill,
    "masked_select": gs.masked_select,
    "take_along_dim": gs.take_along_dim,
    "take": gs.take,
    "nonzero": gs.nonzero,
    "argwhere": gs.argwhere,
    "one_hot": gs.one_hot,
}
INPLACE = ("scatter", "scatter_add", "masked_fill", "index_fill", "index_add")
