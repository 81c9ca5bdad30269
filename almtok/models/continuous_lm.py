"""The continuous-token audio LM: text prefix -> causal decoder -> z -> per-token diffusion head.

The prefix, the decoder over [prefix | audio slots] and the slots' layout are `audio_lm.AudioLM`'s.
Audio slot j reads its input token through `in_proj` (a linear map of the C channels). The
decoder's output z at audio slot j conditions the denoiser, which models p(x[tgt_j] | z_j).

Shape letters: B batch, L audio slots, D model width, C token channels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import diffusion
from almtok.models import audio_lm
from almtok.models import mntp
from almtok.models.audio_lm import AudioLM
from almtok.models.denoiser import Denoiser
from almtok.text.minilm import TextEmbedding

Array = jax.Array
Dtype = Any

# What each metric is a mean over: validation batches are weighted by these counts.
METRIC_WEIGHTS = {"ntp_loss": "ntp", "mntp_loss": "mntp", "mntp_kept_frac": "ntp"}


class ContinuousLM(AudioLM):
  """Causal decoder over continuous tokens with a text prefix and a diffusion head."""

  def __init__(self, token_dim: int, max_len: int, text_dim: int, text_len: int,
               decoder: dict, head: dict, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.token_dim = token_dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # Parameters are drawn from `rngs` in this order.
    self.make_decoder(max_len, text_len, decoder, kw)
    self.head = Denoiser(token_dim, self.decoder.width, **head, **kw)
    self.make_prefix(text_dim, kw)
    self.in_proj = nnx.Linear(token_dim, self.decoder.width,
                              kernel_init=nnx.initializers.xavier_uniform(), **kw)
    self.make_offsets(kw)

  def embed_tokens(self, inputs_BxLxC: Array) -> Array:
    return self.in_proj(inputs_BxLxC.astype(self.dtype))

  def __call__(self, text: TextEmbedding, use_null_B: Array, x_BxLxC: Array,
               slots: mntp.Slots) -> tuple[Array, Array]:
    """Teacher-forced pass; returns (z_BxLxD float32, targets_BxLxC) for the audio slots."""
    l = x_BxLxC.shape[1]
    if l > self.max_len:
      raise ValueError(f"{l} audio tokens exceed the model's max_len {self.max_len}")
    inputs_BxLxC, targets_BxLxC = mntp.inputs_and_targets(x_BxLxC, slots)
    audio_BxLxD = self.embed_slots(inputs_BxLxC, slots.src_BxL, slots.offset_BxL)
    return self.forward_slots(text, use_null_B, audio_BxLxD, slots), targets_BxLxC


def target_counts(mask_BxL: Array, rng: Array, example_index_B: Array | None = None, *,
                  loss: audio_lm.LossConfig) -> dict[str, Array]:
  """The batch's counts that normalize the loss: valid NTP and MNTP targets, and examples.

  A trainer that splits a batch into micro-batches passes the whole batch's counts to each
  part's `loss_fn`, so that the parts' losses (and gradients) add up to the whole batch's.
  """
  d = audio_lm.draw(rng, mask_BxL, example_index_B, loss)
  counts = {"ntp": jnp.sum(d.ntp.valid_BxL.astype(jnp.float32)),
            "examples": jnp.float32(mask_BxL.shape[0])}
  if d.masked is not None:
    counts["mntp"] = jnp.sum(d.masked.valid_BxL.astype(jnp.float32))
  return counts


def loss_fn(model: ContinuousLM, text: TextEmbedding, x_BxLxC: Array, mask_BxL: Array,
            rng: Array, *, loss: audio_lm.LossConfig, schedule: diffusion.Schedule,
            batch_mul: int, prediction: str,
            example_index_B: Array | None = None, counts: dict[str, Array] | None = None,
            head_remat: bool = False) -> tuple[Array, dict[str, Array]]:
  """Training loss `loss.total(ntp, mntp)` and its parts (float32).

  Each part is the mean of the head's loss over its valid targets. One decoder call runs the NTP
  sequences and, with MNTP (`loss.mntp_weight > 0`), their MNTP versions stacked on the batch
  axis; both share each example's prefix (and its CFG drop).

  Randomness is per example (see `draw`): `rng` is the step's key and `example_index_B` the
  examples' places in the whole batch. With `counts` (the whole batch's `target_counts`) this
  batch is one part of it: each part then divides by the whole batch's counts, so the parts'
  losses, metrics and gradients sum to the whole batch's exactly (up to float rounding).
  """
  b, l, c = x_BxLxC.shape
  d = audio_lm.draw(rng, mask_BxL, example_index_B, loss)
  if counts is None:
    counts = target_counts(mask_BxL, rng, example_index_B, loss=loss)
  slots = audio_lm.stack_slots(d)
  copies = 1 if d.masked is None else 2
  repeat = lambda a: jnp.concatenate([a] * copies, axis=0)
  z_XxLxD, targets_XxLxC = model(jax.tree.map(repeat, text), repeat(d.use_null_B),
                                 repeat(x_BxLxC), slots)

  def part(rows, keys_B, name):
    # Token (b, j) draws its timesteps and noise from its example's key folded with j.
    token_keys_BxL = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(
        jnp.arange(l)))(keys_B)
    total, _ = diffusion.diffusion_loss_terms(
        model.head, schedule, targets_XxLxC[rows].reshape(-1, c),
        z_XxLxD[rows].reshape(b * l, -1), slots.valid_BxL[rows].reshape(-1),
        token_keys_BxL.reshape(b * l, *token_keys_BxL.shape[2:]), batch_mul=batch_mul,
        prediction=prediction, remat=head_remat)
    return total / jnp.maximum(batch_mul * counts[name], 1.0)

  ntp_loss = part(slice(0, b), d.ntp_keys_B, "ntp")
  metrics = {"ntp_loss": ntp_loss,
             "cfg_drop_frac": jnp.sum(d.use_null_B.astype(jnp.float32)) / counts["examples"]}
  if d.masked is not None:
    mntp_loss = part(slice(b, 2 * b), d.mntp_keys_B, "mntp")
    kept = jnp.sum(d.masked.valid_BxL.astype(jnp.float32)) / jnp.maximum(counts["ntp"], 1.0)
    metrics.update(mntp_loss=mntp_loss, mntp_kept_frac=kept)
  metrics["loss"] = total = loss.total(ntp_loss, metrics.get("mntp_loss", 0.0))
  return total, metrics
