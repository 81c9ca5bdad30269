"""Optimiser, learning-rate schedule and EMA for the trainers.

AdamW with linear warmup then cosine decay, global-norm gradient clipping, and weight decay on
matrices only (kernels and embeddings: arrays of rank >= 2). Norm scales, biases and other
vectors are not decayed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Warmup from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
  `learning_rate * final_lr_fraction` at `num_steps`."""
  warmup = min(config.warmup_steps, max(config.num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(config.num_steps, warmup + 1),
      end_value=config.learning_rate * config.final_lr_fraction)


def decay_mask(params):
  """True for parameters that get weight decay (rank >= 2)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The trainer's optimiser from a `train` config block."""
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
      optax.adamw(learning_rate(config), b1=config.b1, b2=config.b2, eps=1e-8,
                  weight_decay=config.weight_decay, mask=decay_mask),
  )


def ema_decay_at(step, decay: float, warmup: bool = True):
  """The EMA decay of the update after `step` earlier updates.

  With warm-up, min(decay, (1 + step) / (10 + step)): the average forgets the random
  initialisation within the first steps instead of keeping decay ** step of it (10% of it after
  450 steps at 0.995), and reaches `decay` after 10 / (1 - decay) steps or so.
  """
  if not warmup:
    return jnp.float32(decay)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema, params, decay: float | jax.Array):
  """ema <- decay * ema + (1 - decay) * params, in float32."""
  return jax.tree.map(
      lambda e, p: (decay * e.astype(jnp.float32) + (1.0 - decay) * p.astype(jnp.float32)
                    ).astype(e.dtype), ema, params)
