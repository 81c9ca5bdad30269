"""The training objective and the jitted-step bodies that the trainer, the planner and the
benchmarks share: `make_objective` (the model's loss and whole-batch target counts),
`make_train_step` (one optimizer update, with gradient accumulation and EMA), `make_eval_step`,
and `abstract_batch` (the shapes of what the trainer feeds a step).

A batch holds `x_BxLxC` (normalized latents), `mask_BxL` and `text` (a `TextEmbedding`); the steps
add `index_B`, each example's row in the global batch, from which its random draws derive.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from almtok import configlib
from almtok import diffusion
from almtok import models
from almtok import optim
from almtok import sharding
from almtok.models import audio_lm
from almtok.models import continuous_lm
from almtok.models import decoder
from almtok.models import discrete_lm
from almtok.quantizers import rvq
from almtok.text.minilm import TextEmbedding


def check_config(config: ml_collections.ConfigDict) -> None:
  """Range checks that must pass before any work starts."""
  configlib.validate(config, choices={
      "model_name": models.NAMES, "dtype": ("float32", "bfloat16"),
      "diffusion.prediction": ("eps", "v"), "diffusion.schedule": ("cosine", "linear"),
      "model.pattern": discrete_lm.PATTERNS,
      "model.decoder.remat": tuple(decoder.REMAT_POLICIES)})
  if (config.model_name == "discrete_lm" and config.model.pattern == "delay"
      and config.loss.mntp_weight > 0):
    raise configlib.ConfigError(
        f"config.loss.mntp_weight={config.loss.mntp_weight}: MNTP on codes needs "
        f"model.pattern='parallel' (a delay-pattern step mixes codebooks of several frames)")
  t = config.train
  if config.data.batch_size % t.grad_accum:
    raise configlib.ConfigError(
        f"config.train.grad_accum={t.grad_accum}: must divide data.batch_size="
        f"{config.data.batch_size}")
  if config.data.seq_len > config.model.max_len:
    raise configlib.ConfigError(f"config.data.seq_len={config.data.seq_len}: must be <= "
                                f"model.max_len={config.model.max_len}")
  if not 0.0 <= t.ema_decay < 1.0:
    raise configlib.ConfigError(f"config.train.ema_decay={t.ema_decay}: must be in [0, 1)")


def head_kwargs(config) -> dict[str, Any]:
  """The continuous LM's head-loss settings (`config.diffusion`, and the remat policy)."""
  # A decoder remat policy also makes the head run its noise draws one at a time, each
  # recomputed in the backward pass (`diffusion.diffusion_loss_terms`).
  return dict(batch_mul=config.diffusion.batch_mul, prediction=config.diffusion.prediction,
              head_remat=config.model.decoder.remat != "none")


class Objective(NamedTuple):
  """The run's model objective: `loss(model, batch, rng, counts) -> (loss, metrics)` and
  `counts(batch, rng)`, the whole batch's target counts (see `continuous_lm.target_counts`);
  `settings` say how the loss's parts add up (`settings.total`). `batch` holds `x_BxLxC`
  (normalized latents), `mask_BxL`, `text` and `index_B`."""
  loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  counts: Callable[..., dict[str, jax.Array]]
  metric_weights: dict[str, str]
  settings: audio_lm.LossConfig


def make_objective(config, schedule: diffusion.Schedule | None, quantizer: rvq.RVQ | None,
                   settings: audio_lm.LossConfig | None = None) -> Objective:
  """The continuous LM's diffusion loss, or the discrete baseline's cross-entropy on the codes
  that `quantizer` gives the same latents (encoded on the device, inside the step), with the
  loss settings of `config.loss` (or `settings`)."""
  settings = settings or audio_lm.LossConfig.from_config(config.loss)
  if config.model_name == "discrete_lm":
    shape = dict(num_codebooks=config.model.num_codebooks, pattern=config.model.pattern)

    def loss(model, batch, rng, counts):
      codes_BxLxQ = quantizer.encode(batch["x_BxLxC"])
      return discrete_lm.loss_fn(model, batch["text"], codes_BxLxQ, batch["mask_BxL"], rng,
                                 loss=settings, example_index_B=batch["index_B"], counts=counts)

    def counts(batch, rng):
      return discrete_lm.target_counts(batch["mask_BxL"], rng, batch["index_B"], **shape,
                                       loss=settings)

    return Objective(loss, counts, discrete_lm.METRIC_WEIGHTS, settings)

  head = head_kwargs(config)

  def loss(model, batch, rng, counts):
    return continuous_lm.loss_fn(model, batch["text"], batch["x_BxLxC"], batch["mask_BxL"], rng,
                                 loss=settings, schedule=schedule,
                                 example_index_B=batch["index_B"], counts=counts, **head)

  def counts(batch, rng):
    return continuous_lm.target_counts(batch["mask_BxL"], rng, batch["index_B"], loss=settings)

  return Objective(loss, counts, continuous_lm.METRIC_WEIGHTS, settings)


def make_train_step(config, graphdef, tx, schedule, quantizer=None):
  """The pure step `(state, batch, rng) -> (state, metrics)`.

  `batch` holds `x_BxLxC`, `mask_BxL` and `text` (a TextEmbedding). Every example draws its
  randomness from `fold_in(fold_in(rng, step), its index in the batch)`, and each loss part is
  normalized by its count over the whole batch, so with grad_accum > 1 (micro-batches whose
  gradients are summed in a scan) the update is the whole batch's up to float rounding.
  Micro-batch i takes rows i, i + accum, i + 2 accum, ...: each device's block of rows holds a
  share of every micro-batch. A step whose loss or gradient norm is not finite leaves the state
  unchanged and reports `finite = 0`.
  """
  objective = make_objective(config, schedule, quantizer)
  accum = config.train.grad_accum

  def loss(params, micro, rng, counts):
    return objective.loss(nnx.merge(graphdef, params), micro, rng, counts)

  grad_fn = jax.value_and_grad(loss, has_aux=True)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state["step"])
    b = batch["mask_BxL"].shape[0]
    batch = dict(batch, index_B=jnp.arange(b, dtype=jnp.int32))
    counts = objective.counts(batch, rng)
    if accum == 1:
      (_, metrics), grads = grad_fn(state["params"], batch, rng, counts)
    else:
      def split(a):
        a = a.reshape(b // accum, accum, *a.shape[1:]).swapaxes(0, 1)
        if not jax.sharding.get_abstract_mesh().empty:
          a = jax.lax.with_sharding_constraint(
              a, jax.P(None, sharding.BATCH_AXES, *([None] * (a.ndim - 2))))
        return a

      micro = jax.tree.map(split, batch)

      def body(carry, mb):
        (_, m), g = grad_fn(state["params"], mb, rng, counts)
        return jax.tree.map(jnp.add, carry, (g, m)), None

      first = jax.tree.map(lambda a: a[0], micro)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           jax.eval_shape(grad_fn, state["params"], first, rng, counts))
      (grads, metrics), _ = jax.lax.scan(body, (zeros[1], zeros[0][1]), micro)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                             for g in jax.tree.leaves(grads)))
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), state["params"], updates)
    decay = optim.ema_decay_at(state["step"], config.train.ema_decay, config.train.ema_warmup)
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
           "ema": optim.ema_update(state["ema"], params, decay)}
    new, finite = optim.keep_if_finite(new, state, metrics["loss"], grad_norm)
    metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32),
                   lr=optim.learning_rate(config.train)(state["step"]), ema_decay=decay)
    return new, metrics

  return train_step


def make_eval_step(config, graphdef, schedule, quantizer=None):
  """Validation loss of the EMA parameters (no CFG dropout, fixed noise per batch), and the
  batch's counts to weight it by: NTP and MNTP targets, and examples with tokens (padding rows
  of a last partial batch have none)."""
  settings = dataclasses.replace(audio_lm.LossConfig.from_config(config.loss), cfg_dropout=0.0)
  objective = make_objective(config, schedule, quantizer, settings)

  def eval_step(params, batch, rng):
    b = batch["mask_BxL"].shape[0]
    batch = dict(batch, index_B=jnp.arange(b, dtype=jnp.int32))
    counts = objective.counts(batch, rng)
    _, metrics = objective.loss(nnx.merge(graphdef, params), batch, rng, counts)
    counts["examples"] = jnp.sum(jnp.any(batch["mask_BxL"], axis=1).astype(jnp.float32))
    return metrics, counts

  return eval_step


def token_dim(config: ml_collections.ConfigDict) -> int:
  """Channels of the latents the run reads (the continuous model's tokens, or what the discrete
  run's quantizer codes)."""
  if config.model_name == "discrete_lm":
    return int(config.quantizer.dim)
  return int(config.model.token_dim)


def abstract_batch(config: ml_collections.ConfigDict, batch_size: int,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Shapes and dtypes (and, given `mesh`, shardings over the batch axes) of a batch of
  `batch_size` rows as the trainer hands it to a step: `config.data.seq_len` latent frames and
  the text encoder's `config.model.text_len` token states."""
  b, l, n, e = batch_size, config.data.seq_len, config.model.text_len, config.model.text_dim

  def spec(shape, dtype):
    where = None if mesh is None else sharding.batch_sharding(mesh, len(shape))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=where)

  return {"x_BxLxC": spec((b, l, token_dim(config)), jnp.float32),
          "mask_BxL": spec((b, l), jnp.bool_),
          "text": TextEmbedding(spec((b, n, e), jnp.float32), spec((b, n), jnp.bool_),
                                spec((b, e), jnp.float32))}
