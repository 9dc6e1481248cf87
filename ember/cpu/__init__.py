"""Ember's fused CPU kernels: loops compiled by numba, and their launchers.

The NumPy composite is the reference; a kernel here replaces it where one pass over memory
measurably beats NumPy's pass per ufunc: GELU's 23 passes, layer, batch and group norm's
broadcasts, Adam's dozen passes per parameter, the Winograd conv transforms' padded copies,
depthwise convs, and the pointwise activations and losses (leaky_relu, elu/selu/celu,
smooth_l1/huber), softmax and log_softmax rows, and the scatter-add of embedding and indexing
backward. Each family is a launcher module that imports no numba (``gelu.py``) and a kernel
module compiled on first use (``_gelu_kernels.py``). Without numba, or with
``EMBER_CPU_KERNELS=0``, every launcher reports "not handled" and the ops keep their NumPy path,
which is also each kernel's oracle in the tests.

Sits beside ember.cuda, between ember.tensor and ember.autograd: it imports only NumPy,
ember.tensor and (lazily) numba.
"""

FAMILIES = (
    "gelu",
    "layernorm",
    "adam",
    "winograd",
    "batchnorm",
    "groupnorm",
    "depthwise",
    "pointwise",
    "softmax",
    "index",
)
