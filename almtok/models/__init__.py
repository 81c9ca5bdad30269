"""Models by name: a config's `model_name` selects the class, `config.model` its arguments."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

NAMES = ("continuous_lm", "discrete_lm")


def build(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """`Model(**config.model)` for the model that `config.model_name` names."""
  dtype = jnp.dtype(config.dtype)
  if config.model_name == "continuous_lm":
    from almtok.models import continuous_lm  # pylint: disable=g-import-not-at-top
    return continuous_lm.ContinuousLM(**config.model.to_dict(), dtype=dtype,
                                      param_dtype=jnp.float32, rngs=rngs)
  if config.model_name == "discrete_lm":
    from almtok.models import discrete_lm  # pylint: disable=g-import-not-at-top
    return discrete_lm.DiscreteLM(**config.model.to_dict(), dtype=dtype,
                                  param_dtype=jnp.float32, rngs=rngs)
  raise ValueError(f"model_name={config.model_name!r}: must be one of {list(NAMES)}")


def abstract(config: ml_collections.ConfigDict) -> nnx.Module:
  """The model with shapes only (no memory allocated), for counting and sharding."""
  return nnx.eval_shape(lambda: build(config, nnx.Rngs(0)))
