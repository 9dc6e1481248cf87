"""``ember.nn.functional``: the functional forms of the layers and losses (torch's ``F``).

One module per family, each with ``__all__``. The ops that already live in ``ember.ops``
(activations, softmax, embedding, pad, one_hot) are re-exported by those families under
torch.nn.functional's names.
"""

from __future__ import annotations

from ember.nn.functional import activation as _activation
from ember.nn.functional import attention as _attention
from ember.nn.functional import conv as _conv
from ember.nn.functional import distance as _distance
from ember.nn.functional import dropout as _dropout
from ember.nn.functional import linear as _linear
from ember.nn.functional import loss as _loss
from ember.nn.functional import normalization as _normalization
from ember.nn.functional import pixelshuffle as _pixelshuffle
from ember.nn.functional import pooling as _pooling
from ember.nn.functional import sparse as _sparse
from ember.nn.functional import upsampling as _upsampling
from ember.nn.functional.activation import *  # noqa: F403
from ember.nn.functional.attention import *  # noqa: F403
from ember.nn.functional.conv import *  # noqa: F403
from ember.nn.functional.distance import *  # noqa: F403
from ember.nn.functional.dropout import *  # noqa: F403
from ember.nn.functional.linear import *  # noqa: F403
from ember.nn.functional.loss import *  # noqa: F403
from ember.nn.functional.normalization import *  # noqa: F403
from ember.nn.functional.pixelshuffle import *  # noqa: F403
from ember.nn.functional.pooling import *  # noqa: F403
from ember.nn.functional.sparse import *  # noqa: F403
from ember.nn.functional.upsampling import *  # noqa: F403

_FAMILIES = (
    _activation,
    _linear,
    _conv,
    _pooling,
    _normalization,
    _dropout,
    _loss,
    _attention,
    _sparse,
    _distance,
    _pixelshuffle,
    _upsampling,
)
from ember.ops.join import pad  # noqa: E402 - torch.nn.functional.pad

__all__ = [name for mod in _FAMILIES for name in mod.__all__] + ["pad"]
