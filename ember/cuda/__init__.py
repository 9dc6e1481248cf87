"""Ember's hand-written CUDA kernels (``*.cu``) and their CuPy launchers.

Sits between ember.tensor and ember.autograd: it imports only ember.tensor, NumPy and (lazily,
on first launch) CuPy, so importing it never needs a GPU. Ops call a launcher only for CuPy
arrays and only while ``compile.kernels_enabled()`` (``EMBER_CUDA_KERNELS=0`` turns every
kernel off, leaving the composite paths that are the kernels' oracles).

Families: softmax, cross_entropy, layernorm, gelu, embedding, multi_tensor (optimizers and the
GradScaler unscale), conv (im2col / col2im), pooling, attention (causal scale+mask+softmax),
flash_attention (causal attention, tiles in shared memory, online softmax: no (T, S) matrix).
"""

FAMILIES = (
    "softmax",
    "cross_entropy",
    "layernorm",
    "gelu",
    "embedding",
    "multi_tensor",
    "conv",
    "pooling",
    "attention",
    "flash_attention",
)
