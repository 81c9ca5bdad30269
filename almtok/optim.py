"""Optimiser, learning-rate schedules, EMA and the non-finite stop, shared by the trainers.

AdamW with linear warmup then cosine decay, global-norm gradient clipping, and weight decay on
matrices only (kernels and embeddings: arrays of rank >= 2). Norm scales, biases and other
vectors are not decayed. Both trainers read the same keys of their `train` config block:
learning_rate, warmup_steps, num_steps, final_lr_fraction, weight_decay, b1, b2, grad_clip.

A step whose loss or gradient norm is not finite changes nothing (`keep_if_finite`), and the
trainer stops with `NonFiniteError`, keeping its last good checkpoint.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from almtok import configlib
from almtok import sharding


class NonFiniteError(configlib.FatalError):
  """The loss or the gradient stopped being finite."""


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Warmup from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
  `learning_rate * final_lr_fraction` at `num_steps`."""
  warmup = min(config.warmup_steps, max(config.num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(config.num_steps, warmup + 1),
      end_value=config.learning_rate * config.final_lr_fraction)


def budget_learning_rate(config: ml_collections.ConfigDict, step: jax.Array,
                         progress: jax.Array) -> jax.Array:
  """For a trainer with a time budget: linear warm-up over `warmup_steps`, then a cosine from
  `learning_rate` to `learning_rate * final_lr_fraction` over `progress` in [0, 1] (the larger of
  the step's and the time's share of their budgets), so that a run stopped by time still anneals.
  """
  step = jnp.asarray(step, jnp.float32)
  warm = jnp.minimum(1.0, (step + 1.0) / max(1, config.warmup_steps))
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)))
  end = config.final_lr_fraction
  return config.learning_rate * warm * (end + (1.0 - end) * cosine)


def decay_mask(params):
  """True for parameters that get weight decay: rank >= 2 per layer. In a scanned decoder stack
  (`decoder/layers/...`) the leading layer axis does not count, so its norm scales [N, D] stay
  undecayed as an unrolled stack's [D] ones do."""
  def decays(path, p) -> bool:
    stacked = "decoder/layers/" in sharding.path_str(path)
    return p.ndim - (1 if stacked else 0) >= 2

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: ml_collections.ConfigDict, *,
                   injected_lr: bool = False) -> optax.GradientTransformation:
  """The trainer's optimiser from a `train` config block.

  The learning rate follows `learning_rate(config)` by step, or with `injected_lr` it is a
  hyperparameter in the optimiser state that the train step sets (`set_learning_rate`).
  """

  def chain(lr):
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
        optax.adamw(lr, b1=config.b1, b2=config.b2, eps=1e-8,
                    weight_decay=config.weight_decay, mask=decay_mask),
    )

  if injected_lr:
    return optax.inject_hyperparams(chain)(lr=config.learning_rate)
  return chain(learning_rate(config))


def set_learning_rate(opt_state, lr: jax.Array):
  """The state of a `make_optimizer(..., injected_lr=True)` optimiser with learning rate `lr`."""
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "lr": lr})


def keep_if_finite(new, old, loss: jax.Array, grad_norm: jax.Array):
  """(`new` if loss and grad_norm are finite, else `old`; the finiteness as a bool scalar)."""
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old), finite


def check_finite(step: int, metrics: dict[str, float]) -> None:
  """Raises `NonFiniteError` naming the first of loss and grad_norm that is not finite."""
  bad = next((k for k in ("loss", "grad_norm") if k in metrics and not math.isfinite(metrics[k])),
             None)
  if bad is not None:
    raise NonFiniteError(f"step {step}: {bad} is {metrics[bad]} (not finite); stopped, the last "
                         f"good checkpoint is kept")


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
