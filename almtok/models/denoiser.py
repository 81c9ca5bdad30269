"""Per-token diffusion denoiser: an MLP with adaLN conditioning on (timestep, decoder state).

The network reads a noisy token x_t, its timestep t and the decoder's output z at that position,
and predicts eps (or v; the network does not care which). Every adaLN modulation and the output
layer start at zero, so a fresh denoiser outputs exactly 0 and each residual block starts as the
identity.

Shape letters:
  N: tokens (any flattened batch of positions).
  C: token (latent) channels.
  D: conditioning (decoder state) width.
  W: denoiser width.
  F: sinusoidal timestep-feature size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import sharding

Array = jax.Array
Dtype = jnp.dtype

_zeros = nnx.initializers.zeros_init()
_xavier = nnx.initializers.xavier_uniform()
_normal_002 = nnx.initializers.normal(stddev=0.02)


def timestep_features(t_N: Array, dim: int, max_period: float = 10000.0) -> Array:
  """Sinusoidal features [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)); float32.

  An odd `dim` gets one trailing zero so that the output is always [N, dim].
  """
  half = dim // 2
  freqs_H = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args_NxH = t_N.astype(jnp.float32)[:, None] * freqs_H[None, :]
  feats_NxF = jnp.concatenate([jnp.cos(args_NxH), jnp.sin(args_NxH)], axis=-1)
  if dim % 2:
    feats_NxF = jnp.concatenate([feats_NxF, jnp.zeros_like(feats_NxF[:, :1])], axis=-1)
  return feats_NxF


def _modulate(x_NxW: Array, shift_NxW: Array, scale_NxW: Array) -> Array:
  return x_NxW * (1 + scale_NxW) + shift_NxW


class TimestepEmbedder(nnx.Module):
  """Sinusoidal features of t followed by Linear(F -> W), SiLU, Linear(W -> W)."""

  def __init__(self, width: int, *, freq_dim: int = 256, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.freq_dim = freq_dim
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_normal_002, rngs=rngs)
    self.fc1 = nnx.Linear(freq_dim, width, **kw)
    self.fc2 = nnx.Linear(width, width, **kw)

  def __call__(self, t_N: Array) -> Array:
    h_NxW = self.fc1(timestep_features(t_N, self.freq_dim).astype(self.dtype))
    return self.fc2(nnx.silu(h_NxW))


class ResBlock(nnx.Module):
  """x + gate * MLP(modulate(LayerNorm(x), shift, scale)); (shift, scale, gate) from adaLN(c)."""

  def __init__(self, width: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, use_bias=False, use_scale=False, **kw)
    self.fc1 = nnx.Linear(width, width, kernel_init=_xavier, **kw)
    self.fc2 = nnx.Linear(width, width, kernel_init=_xavier, **kw)
    # Zero-initialised so that every block starts as the identity.
    self.ada_ln = nnx.Linear(width, 3 * width, kernel_init=_zeros, **kw)

  def __call__(self, x_NxW: Array, c_NxW: Array) -> Array:
    shift_NxW, scale_NxW, gate_NxW = jnp.split(self.ada_ln(nnx.silu(c_NxW)), 3, axis=-1)
    h_NxW = _modulate(self.norm(x_NxW), shift_NxW, scale_NxW)
    h_NxW = self.fc2(nnx.silu(self.fc1(h_NxW)))
    return x_NxW + gate_NxW * h_NxW


class FinalLayer(nnx.Module):
  """Linear(modulate(LayerNorm(x), shift, scale)) with zero-initialised adaLN and output."""

  def __init__(self, width: int, out_dim: int, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, use_bias=False, use_scale=False, **kw)
    self.ada_ln = nnx.Linear(width, 2 * width, kernel_init=_zeros, **kw)
    self.linear = nnx.Linear(width, out_dim, kernel_init=_zeros, **kw)

  def __call__(self, x_NxW: Array, c_NxW: Array) -> Array:
    shift_NxW, scale_NxW = jnp.split(self.ada_ln(nnx.silu(c_NxW)), 2, axis=-1)
    return self.linear(_modulate(self.norm(x_NxW), shift_NxW, scale_NxW))


class Denoiser(nnx.Module):
  """MAR-style MLP denoiser: out_NxC = f(x_t_NxC, t_N, z_NxD).

  Conditioning c = TimestepEmbedder(t) + Linear(z). `t_N` holds timesteps of the original
  training schedule (integers or floats). Computes in `dtype`, keeps parameters in
  `param_dtype`, returns float32. Construction touches no concrete values, so
  `nnx.eval_shape(lambda: Denoiser(...))` counts parameters without allocating them.
  """

  def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, *,
               freq_dim: int = 256, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.time_embed = TimestepEmbedder(width, freq_dim=freq_dim, **kw)
    self.cond_embed = nnx.Linear(cond_dim, width, kernel_init=_xavier, **kw)
    self.input_proj = nnx.Linear(token_dim, width, kernel_init=_xavier, **kw)
    self.blocks = nnx.List([ResBlock(width, **kw) for _ in range(depth)])
    self.final = FinalLayer(width, token_dim, **kw)

  def __call__(self, x_t_NxC: Array, t_N: Array, z_NxD: Array) -> Array:
    # Rows stay split over the batch axes under FSDP (`sharding.shard_rows`).
    c_NxW = sharding.shard_rows(self.time_embed(t_N) + self.cond_embed(z_NxD.astype(self.dtype)))
    x_NxW = sharding.shard_rows(self.input_proj(x_t_NxC.astype(self.dtype)))
    for block in self.blocks:
      x_NxW = sharding.shard_rows(block(x_NxW, c_NxW))
    return self.final(x_NxW, c_NxW).astype(jnp.float32)
