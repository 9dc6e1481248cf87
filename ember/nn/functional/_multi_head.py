"""torch's ``F.multi_head_attention_forward``: in-projection, head split, attention and
out-projection, with torch's mask rules (bool masks mark with True what must NOT be attended,
float masks are added; ``key_padding_mask`` is merged into ``attn_mask``).

Inside, everything runs batch-first, (N, H, L, head_dim), so the heads are strided views of the
projections rather than copies. ``need_weights=False`` goes through the fused
``scaled_dot_product_attention``; ``need_weights=True`` builds the probabilities from ember ops
exactly as torch's slow path does (so a fully masked row is NaN there, as in torch).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def canonical_mask(
    mask, mask_name: str, other_type, other_name: str, target_type, check_other: bool = True
):
    """A bool mask becomes a float one (``-inf`` where True); a float mask stays as it is."""
    if mask is None:
        return None
    is_float = mask.data.dtype in dtypes.FLOATING_NP
    if mask.data.dtype != np.bool_ and not is_float:
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype is not other_type:
        warnings.warn(
            f"Support for mismatched {mask_name} and {other_name} is deprecated. Use "
            "same type for both instead.",
            UserWarning,
            stacklevel=3,
        )
    if not is_float:
        xp = get_array_module(mask.data)
        mask = Tensor(xp.where(mask.data, -np.inf, 0.0).astype(target_type.np))
    return mask


def _dtype_or_none(t):
    return None if t is None else t.dtype


def _shape_check(query, key, value, key_padding_mask, attn_mask, num_heads: int) -> bool:
    """torch's ``_mha_shape_check``: returns whether the input is batched."""
    qd, kd, vd = query.ndim, key.ndim, value.ndim
    if qd == 3:
        if kd != 3 or vd != 3:
            raise AssertionError(
                "For batched (3-D) `query`, expected `key` and `value` to be 3-D"
                f" but found {kd}-D and {vd}-D tensors respectively"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 2:
            raise AssertionError(
                "For batched (3-D) `query`, expected `key_padding_mask` to be "
                f"`None` or 2-D but found {key_padding_mask.ndim}-D tensor "
                "instead"
            )
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise AssertionError(
                "For batched (3-D) `query`, expected `attn_mask` to be `None`, "
                f"2-D or 3-D but found {attn_mask.ndim}-D tensor instead"
            )
        return True
    if qd == 2:
        if kd != 2 or vd != 2:
            raise AssertionError(
                "For unbatched (2-D) `query`, expected `key` and `value` to be "
                f"2-D but found {kd}-D and {vd}-D tensors respectively"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 1:
            raise AssertionError(
                "For unbatched (2-D) `query`, expected `key_padding_mask` to "
                f"be `None` or 1-D but found {key_padding_mask.ndim}-D tensor "
                "instead"
            )
        if attn_mask is not None:
            if attn_mask.ndim not in (2, 3):
                raise AssertionError(
                    "For unbatched (2-D) `query`, expected `attn_mask` to be "
                    f"`None`, 2-D or 3-D but found {attn_mask.ndim}-D tensor "
                    "instead"
                )
            want = (num_heads, query.shape[0], key.shape[0])
            if attn_mask.ndim == 3 and tuple(attn_mask.shape) != want:
                raise AssertionError(
                    f"Expected `attn_mask` shape to be {want} but got {tuple(attn_mask.shape)}"
                )
        return False
    raise AssertionError(
        f"query should be unbatched 2D or batched 3D tensor but received {qd}-D query tensor"
    )


def _project(query, key, value, in_proj_weight, in_proj_bias, separate, qw, kw, vw):
    """q, k, v = the three input projections (one GEMM when query, key and value are one)."""
    from ember.nn.functional.linear import linear

    e = query.shape[-1]
    b = in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
    if separate:
        return linear(query, qw, bq), linear(key, kw, bk), linear(value, vw, bv)
    if query is key and key is value:
        proj = linear(query, in_proj_weight, b)
        return proj[..., :e], proj[..., e : 2 * e], proj[..., 2 * e :]
    wq, wk, wv = in_proj_weight.chunk(3)
    if key is value:
        kv = linear(key, in_proj_weight[e:], None if b is None else b[e:])
        return linear(query, wq, bq), kv[..., :e], kv[..., e:]
    return linear(query, wq, bq), linear(key, wk, bk), linear(value, wv, bv)


def _pad_last(mask):
    from ember.ops.join import pad

    return None if mask is None else pad(mask, (0, 1))


def multi_head_attention_forward(
    query,
    key,
    value,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight,
    in_proj_bias,
    bias_k,
    bias_v,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight,
    out_proj_bias,
    training: bool = True,
    key_padding_mask=None,
    need_weights: bool = True,
    attn_mask=None,
    use_separate_proj_weight: bool = False,
    q_proj_weight=None,
    k_proj_weight=None,
    v_proj_weight=None,
    static_k=None,
    static_v=None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    batch_first: bool = False,
):
    """Sequence-first (L, N, E) inputs as torch's (``batch_first=True``: (N, L, E), an ember
    extension the module uses to skip two transposes). Returns (output, weights or None)."""
    if static_k is not None or static_v is not None:
        raise NotImplementedError(
            "multi_head_attention_forward: static_k/static_v are not supported"
        )
    batched = _shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not batched:  # add the batch dim, keeping "query is key is value" true
        dim = 0 if batch_first else 1
        same_kv, same_qk = key is value, query is key
        query = query.unsqueeze(dim)
        key = query if same_qk else key.unsqueeze(dim)
        value = key if same_kv else value.unsqueeze(dim)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    if not batch_first:  # views: (L, N, E) -> (N, L, E)
        same_kv = key is value
        same_qk = query is key
        query = query.transpose(0, 1)
        key = query if same_qk else key.transpose(0, 1)
        value = key if same_kv else value.transpose(0, 1)
    bsz, tgt_len, embed_dim = query.shape
    src_len = key.shape[1]

    key_padding_mask = canonical_mask(
        key_padding_mask, "key_padding_mask", _dtype_or_none(attn_mask), "attn_mask", query.dtype
    )
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the "
            "Transformer module method `generate_square_subsequent_mask` to "
            "create this mask."
        )
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # the hint wins: causal attention without materialising the mask
    else:
        attn_mask = canonical_mask(attn_mask, "attn_mask", None, "", query.dtype, False)
        if key_padding_mask is not None:
            is_causal = False
    if embed_dim != embed_dim_to_check:
        raise AssertionError(
            f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}"
        )
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if tuple(key.shape[:2]) != tuple(value.shape[:2]):
            raise AssertionError(
                f"key's sequence and batch dims {tuple(key.shape[:2])} do not "
                f"match value's {tuple(value.shape[:2])}"
            )
    elif tuple(key.shape) != tuple(value.shape):
        raise AssertionError(
            f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}"
        )

    q, k, v = _project(
        query,
        key,
        value,
        in_proj_weight,
        in_proj_bias,
        use_separate_proj_weight,
        q_proj_weight,
        k_proj_weight,
        v_proj_weight,
    )
    if attn_mask is not None:  # to (1 or N, 1 or H, L, S)
        if attn_mask.ndim == 2:
            want = (tgt_len, src_len)
            if tuple(attn_mask.shape) != want:
                raise RuntimeError(
                    f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, "
                    f"but should be {want}."
                )
            attn_mask = attn_mask.reshape(1, 1, tgt_len, src_len)
        elif attn_mask.ndim == 3:
            want = (bsz * num_heads, tgt_len, src_len)
            if tuple(attn_mask.shape) != want:
                raise RuntimeError(
                    f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, "
                    f"but should be {want}."
                )
            attn_mask = attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")
    if bias_k is not None and bias_v is not None:
        from ember.ops.join import cat

        k = cat([k, bias_k.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        v = cat([v, bias_v.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
    elif bias_k is not None or bias_v is not None:
        raise AssertionError(
            "bias_k is set but bias_v is None"
            if bias_k is not None
            else "bias_v is set but bias_k is None"
        )

    def heads(t):  # (N, S, E) -> (N, H, S, head_dim), a strided view
        return t.reshape(bsz, t.shape[1], num_heads, head_dim).permute(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    if add_zero_attn:
        from ember.ops.join import cat
        from ember.tensor.creation import zeros

        z = zeros((bsz, num_heads, 1, head_dim), dtype=k.dtype, device=k.device)
        k, v = cat([k, z], 2), cat([v, z], 2)
        attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
    src_len = k.shape[2]
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (bsz, src_len):
            raise AssertionError(
                f"expecting key_padding_mask shape of {(bsz, src_len)}, but got "
                f"{tuple(key_padding_mask.shape)}"
            )
        kpm = key_padding_mask.reshape(bsz, 1, 1, src_len)
        attn_mask = kpm if attn_mask is None else attn_mask + kpm
    if not training:
        dropout_p = 0.0

    if need_weights:
        out, weights = _attention_with_weights(q, k, v, attn_mask, dropout_p)
        if average_attn_weights:
            weights = weights.mean(1)
    else:
        from ember.nn.functional.attention import scaled_dot_product_attention

        out = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
        weights = None
    out = _out_projection(out, out_proj_weight, out_proj_bias, bsz, tgt_len, embed_dim, batch_first)
    if not batched:
        out = out.squeeze(0 if batch_first else 1)
        if weights is not None:
            weights = weights.squeeze(0)
    return out, weights


def _attention_with_weights(q, k, v, attn_mask, dropout_p: float):
    """torch's explicit path: softmax(q k^T / sqrt(d) + mask), dropout, @ v."""
    from ember.nn.functional.dropout import dropout
    from ember.ops.nn_ops import softmax

    scores = (q * math.sqrt(1.0 / q.shape[-1])).matmul(k.transpose(-1, -2).contiguous())
    if attn_mask is not None:
        scores = scores + attn_mask
    weights = softmax(scores, -1)
    if dropout_p > 0.0:
        weights = dropout(weights, p=dropout_p)
    return weights.matmul(v), weights


def _out_projection(out, weight, bias, bsz: int, tgt_len: int, embed_dim: int, batch_first: bool):
    """(N, H, L, d) -> (L, N, E) or (N, L, E), then the output Linear."""
    from ember.nn.functional.linear import linear

    order = (0, 2, 1, 3) if batch_first else (2, 0, 1, 3)
    merged = out.permute(*order).reshape(-1, embed_dim)
    out = linear(merged, weight, bias)
    shape = (bsz, tgt_len, embed_dim) if batch_first else (tgt_len, bsz, embed_dim)
    return out.reshape(*shape)
