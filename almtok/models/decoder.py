"""Causal Transformer decoder with rotary positions and a functional KV cache.

Pre-norm blocks: x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x)); the MLP is GELU or SwiGLU.
Attention logits and softmax are float32 whatever the compute dtype. Parameters live in
`param_dtype`, activations in `dtype`.

The same `__call__` serves training (no cache: a full causal pass over the sequence) and decoding
(with a `KVCache`: the new slots are written at `cache.length` and attend to every valid cached
slot before them). Positions for the rotary embedding are given explicitly per slot, because
MNTP feeds a shortened sequence whose tokens keep their original positions.

Shape letters:
  B: batch.           S: slots in this call.       T: cache capacity (slots).
  D: model width.     H: attention heads.          K: width of one head (D / H).
  F: MLP hidden width.  N: layers (a scanned stack's leading axis).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import sharding

Array = jax.Array
Dtype = Any

_NEG_INF = -1e30

# Rematerialisation of each block in the backward pass, by name (the `jax.checkpoint_policies`
# sense): "none" keeps every activation; "full" keeps only each block's input and recomputes the
# rest; "dots" keeps the outputs of the weight matmuls (QKV, output and MLP projections) and
# recomputes the attention scores, norms and activations around them.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class KVCache(NamedTuple):
  """Keys and values per layer, with a validity mask and the number of slots written."""
  k: tuple[Array, ...] | Array   # per layer [B, T, H, K]; a scanned stack's: one [N, B, T, H, K]
  v: tuple[Array, ...] | Array
  mask_BxT: Array        # bool: slot t holds a real (non-padding) key
  length: Array          # int32 scalar: slots written so far


def rope(x_BxSxHxK: Array, positions_BxS: Array, base: float = 10_000.0) -> Array:
  """Rotary position embedding on the last axis (halves rotated), computed in float32."""
  half = x_BxSxHxK.shape[-1] // 2
  freq_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxSx1xK2 = (positions_BxS.astype(jnp.float32)[:, :, None, None] *
                    freq_K2[None, None, None, :])
  sin, cos = jnp.sin(angle_BxSx1xK2), jnp.cos(angle_BxSx1xK2)
  x = x_BxSxHxK.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxSxHxK.dtype)


class Attention(nnx.Module):
  """Multi-head causal self-attention with RoPE and an optional KV cache."""

  def __init__(self, width: int, num_heads: int, *, rope_base: float, dtype: Dtype,
               param_dtype: Dtype, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads, self.head_dim, self.rope_base = num_heads, width // num_heads, rope_base
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
              kernel_init=nnx.initializers.xavier_uniform())
    self.qkv = nnx.Linear(width, 3 * width, **kw)
    self.out = nnx.Linear(width, width, **kw)

  def __call__(self, x_BxSxD: Array, positions_BxS: Array, allowed_BxSxT: Array,
               cache_kv: tuple[Array, Array] | None = None, start: Array | None = None
               ) -> tuple[Array, tuple[Array, Array] | None]:
    b, s, d = x_BxSxD.shape
    qkv = self.qkv(x_BxSxD).reshape(b, s, 3, self.num_heads, self.head_dim)
    q_BxSxHxK = rope(qkv[:, :, 0], positions_BxS, self.rope_base)
    k_BxSxHxK = rope(qkv[:, :, 1], positions_BxS, self.rope_base)
    v_BxSxHxK = qkv[:, :, 2]
    if cache_kv is not None:
      k_cache, v_cache = cache_kv
      k_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(k_cache, k_BxSxHxK.astype(k_cache.dtype),
                                                      start, axis=1)
      v_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(v_cache, v_BxSxHxK.astype(v_cache.dtype),
                                                      start, axis=1)
      new_cache = (k_BxTxHxK, v_BxTxHxK)
    else:
      k_BxTxHxK, v_BxTxHxK, new_cache = k_BxSxHxK, v_BxSxHxK, None
    logits_BxHxSxT = jnp.einsum("bshk,bthk->bhst", q_BxSxHxK, k_BxTxHxK,
                                preferred_element_type=jnp.float32)
    logits_BxHxSxT = logits_BxHxSxT.astype(jnp.float32) * (self.head_dim ** -0.5)
    logits_BxHxSxT = jnp.where(allowed_BxSxT[:, None], logits_BxHxSxT, _NEG_INF)
    probs_BxHxSxT = jax.nn.softmax(logits_BxHxSxT, axis=-1).astype(v_BxTxHxK.dtype)
    out_BxSxHxK = jnp.einsum("bhst,bthk->bshk", probs_BxHxSxT, v_BxTxHxK)
    return self.out(out_BxSxHxK.reshape(b, s, d)), new_cache


class Mlp(nnx.Module):
  """GELU MLP (two matrices) or SwiGLU (three), width -> hidden -> width."""

  def __init__(self, width: int, hidden: int, kind: str, *, dtype: Dtype, param_dtype: Dtype,
               rngs: nnx.Rngs):
    if kind not in ("gelu", "swiglu"):
      raise ValueError(f"mlp kind must be 'gelu' or 'swiglu', got {kind!r}")
    self.kind = kind
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
              kernel_init=nnx.initializers.xavier_uniform())
    self.up = nnx.Linear(width, hidden, **kw)
    self.gate = nnx.Linear(width, hidden, **kw) if kind == "swiglu" else None
    self.down = nnx.Linear(hidden, width, **kw)

  def __call__(self, x_BxSxD: Array) -> Array:
    if self.gate is None:
      h_BxSxF = jax.nn.gelu(self.up(x_BxSxD), approximate=False)
    else:
      h_BxSxF = jax.nn.silu(self.gate(x_BxSxD)) * self.up(x_BxSxD)
    return self.down(h_BxSxF)


class Block(nnx.Module):
  """Pre-norm Transformer block."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, mlp: str, *, rope_base: float,
               dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_norm = nnx.RMSNorm(width, epsilon=1e-6, **kw)
    self.attn = Attention(width, num_heads, rope_base=rope_base, **kw)
    self.mlp_norm = nnx.RMSNorm(width, epsilon=1e-6, **kw)
    self.mlp = Mlp(width, mlp_dim, mlp, **kw)

  def __call__(self, x_BxSxD, positions_BxS, allowed_BxSxT, cache_kv=None, start=None):
    h_BxSxD, new_cache = self.attn(self.attn_norm(x_BxSxD), positions_BxS, allowed_BxSxT,
                                   cache_kv, start)
    x_BxSxD = x_BxSxD + h_BxSxD
    x_BxSxD = x_BxSxD + self.mlp(self.mlp_norm(x_BxSxD))
    return x_BxSxD, new_cache


class Decoder(nnx.Module):
  """A stack of causal blocks and a final norm; maps embedded slots to outputs z.

  With `scan_layers`, the blocks are one `Block` whose parameters carry a leading layer axis
  (`layers/...`, N x the per-block shape), run by a scan over that axis: the program compiles
  once whatever the depth, and a remat policy then bounds what the backward pass keeps to each
  layer's saved values (an unrolled stack leaves the recomputation's schedule to the compiler).
  Otherwise they are a list (`blocks/0/...`, `blocks/1/...`). Both compute the same function.
  """

  def __init__(self, width: int, num_layers: int, num_heads: int, mlp_ratio: float = 4.0,
               mlp: str = "gelu", rope_base: float = 10_000.0, remat: str = "none",
               scan_layers: bool = False, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.width, self.num_layers, self.num_heads = width, num_layers, num_heads
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat={remat!r}: choose one of {sorted(REMAT_POLICIES)}")
    self.dtype, self.remat, self.scan_layers = dtype, remat, scan_layers
    mlp_dim = int(round(width * mlp_ratio))

    def block(r: nnx.Rngs) -> Block:
      return Block(width, num_heads, mlp_dim, mlp, rope_base=rope_base, dtype=dtype,
                   param_dtype=param_dtype, rngs=r)

    if scan_layers:   # N blocks made at once, each from its own split of the rngs.
      self.layers = nnx.split_rngs(splits=num_layers)(
          nnx.vmap(block, in_axes=(0,), out_axes=0))(rngs)
    else:
      self.blocks = nnx.List([block(rngs) for _ in range(num_layers)])
    self.norm = nnx.RMSNorm(width, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def init_cache(self, batch: int, capacity: int, dtype: Dtype | None = None) -> KVCache:
    """An empty cache for `capacity` slots."""
    shape = (batch, capacity, self.num_heads, self.width // self.num_heads)
    dtype = dtype or self.dtype
    if self.scan_layers:
      k, v = (jnp.zeros((self.num_layers, *shape), dtype) for _ in range(2))
    else:
      k, v = (tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers)) for _ in range(2))
    return KVCache(k=k, v=v, mask_BxT=jnp.zeros((batch, capacity), bool),
                   length=jnp.zeros((), jnp.int32))

  def __call__(self, x_BxSxD: Array, positions_BxS: Array, mask_BxS: Array,
               cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
    """Runs the slots causally; returns z (float32 after the final norm) and the new cache.

    Without a cache, slot i attends to slots j <= i whose mask is True. With a cache, the S new
    slots are written at `cache.length`, and attend to every valid cached slot and to the new
    slots up to themselves. Slots whose own mask is False still produce (ignored) outputs.
    """
    b, s, _ = x_BxSxD.shape
    x_BxSxD = x_BxSxD.astype(self.dtype)
    if cache is None:
      causal_SxS = jnp.tril(jnp.ones((s, s), bool))
      allowed_BxSxT = causal_SxS[None] & mask_BxS[:, None, :]
      start, new_mask_BxT = None, None
    else:
      t = cache.mask_BxT.shape[1]
      start = cache.length
      new_mask_BxT = jax.lax.dynamic_update_slice_in_dim(cache.mask_BxT, mask_BxS, start, axis=1)
      query_slot_S = start + jnp.arange(s)
      causal_SxT = jnp.arange(t)[None, :] <= query_slot_S[:, None]
      allowed_BxSxT = causal_SxT[None] & new_mask_BxT[:, None, :]
    # A padded query also sees itself, so that no softmax row is empty; its output is ignored.
    allowed_BxSxT = allowed_BxSxT | _diagonal(s, allowed_BxSxT.shape[-1], start)[None]
    def run_block(block, x_BxSxD, kv):
      x_BxSxD, kv = block(x_BxSxD, positions_BxS, allowed_BxSxT, kv, start)
      return (x_BxSxD if cache is not None else sharding.shard_rows(x_BxSxD)), kv

    if cache is None:
      x_BxSxD = sharding.shard_rows(x_BxSxD)

    if self.remat != "none" and cache is None:   # Decoding keeps no activations anyway.
      run_block = nnx.remat(run_block, policy=REMAT_POLICIES[self.remat])
    if self.scan_layers:
      kv = None if cache is None else (cache.k, cache.v)
      x_BxSxD, new_kv = nnx.scan(run_block, in_axes=(0, nnx.Carry, 0),
                                 out_axes=(nnx.Carry, 0))(self.layers, x_BxSxD, kv)
    else:
      new = []
      for i, block in enumerate(self.blocks):
        kv = None if cache is None else (cache.k[i], cache.v[i])
        x_BxSxD, layer_kv = run_block(block, x_BxSxD, kv)
        new.append(layer_kv)
      new_kv = None if cache is None else tuple(zip(*new))
    z_BxSxD = self.norm(x_BxSxD).astype(jnp.float32)
    if cache is None:
      return z_BxSxD, None
    return z_BxSxD, KVCache(k=new_kv[0], v=new_kv[1], mask_BxT=new_mask_BxT,
                            length=cache.length + s)


def _diagonal(s: int, t: int, start: Array | None) -> Array:
  """[S, T] bool: query i's own slot, at `start + i` in the cache (or i without one)."""
  offset = 0 if start is None else start
  return jnp.arange(t)[None, :] == (offset + jnp.arange(s))[:, None]
