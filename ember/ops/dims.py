"""Dim arguments: normalising an int or a tuple of ints against a tensor's ndim."""

from __future__ import annotations

from ember.tensor.tensor import normalize_dim


def normalize_dims(dim, ndim: int, op: str) -> tuple | None:
    """None stays None (all dims); an int or a sequence becomes a sorted tuple of dims >= 0."""
    if dim is None:
        return None
    if isinstance(dim, int):
        return (normalize_dim(dim, ndim, op),)
    dims = tuple(normalize_dim(d, ndim, op) for d in dim)
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"{op}: dim {tuple(dim)} appears multiple times in the list of dims")
    return tuple(sorted(dims))


__all__ = ["normalize_dim", "normalize_dims"]
