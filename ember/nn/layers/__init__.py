"""The layer modules, one file per family (each exports ``__all__``)."""

from __future__ import annotations

from ember.nn.layers import activation as _activation
from ember.nn.layers import attention as _attention
from ember.nn.layers import conv as _conv
from ember.nn.layers import distance as _distance
from ember.nn.layers import dropout as _dropout
from ember.nn.layers import linear as _linear
from ember.nn.layers import loss as _loss
from ember.nn.layers import normalization as _normalization
from ember.nn.layers import padding as _padding
from ember.nn.layers import pixelshuffle as _pixelshuffle
from ember.nn.layers import pooling as _pooling
from ember.nn.layers import sparse as _sparse
from ember.nn.layers import transformer as _transformer
from ember.nn.layers import upsampling as _upsampling
from ember.nn.layers.activation import *  # noqa: F403
from ember.nn.layers.attention import *  # noqa: F403
from ember.nn.layers.conv import *  # noqa: F403
from ember.nn.layers.distance import *  # noqa: F403
from ember.nn.layers.dropout import *  # noqa: F403
from ember.nn.layers.linear import *  # noqa: F403
from ember.nn.layers.loss import *  # noqa: F403
from ember.nn.layers.normalization import *  # noqa: F403
from ember.nn.layers.padding import *  # noqa: F403
from ember.nn.layers.pixelshuffle import *  # noqa: F403
from ember.nn.layers.pooling import *  # noqa: F403
from ember.nn.layers.sparse import *  # noqa: F403
from ember.nn.layers.transformer import *  # noqa: F403
from ember.nn.layers.upsampling import *  # noqa: F403

_FAMILIES = (
    _activation,
    _linear,
    _conv,
    _pooling,
    _normalization,
    _dropout,
    _sparse,
    _loss,
    _attention,
    _transformer,
    _distance,
    _padding,
    _pixelshuffle,
    _upsampling,
)
__all__ = [name for mod in _FAMILIES for name in mod.__all__]
