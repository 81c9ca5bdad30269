"""Per-example random keys, so that what an example draws does not depend on its batch.

A step's randomness is drawn per example from `fold_in(step_rng, global_index)`: splitting the
batch into micro-batches (gradient accumulation) or over devices then draws exactly what the
whole batch would, so accumulation changes memory and nothing else.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def example_keys(rng: Array, index_B: Array) -> Array:
  """One key per example: `rng` folded with the example's index in the global batch."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.asarray(index_B, jnp.int32))


def row_keys(rng: Array, n: int) -> Array:
  """[n] keys: `rng` itself when it already holds n keys, else n keys split from it."""
  rng = jnp.asarray(rng)
  key_ndim = 0 if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else 1
  if rng.ndim == key_ndim + 1:
    if rng.shape[0] != n:
      raise ValueError(f"got {rng.shape[0]} row keys for {n} rows")
    return rng
  return jax.random.split(rng, n)


def split_rows(keys_N: Array, num: int) -> tuple[Array, ...]:
  """`num` independent streams of per-row keys (stream i: each row's key folded with i)."""
  return tuple(jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys_N) for i in range(num))
