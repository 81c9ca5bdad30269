"""The discrete-token baseline (AudioGen-style): RVQ codes in, one softmax head per codebook out.

The prefix, the decoder over [prefix | audio slots], the start-of-audio token and the target
offsets are `audio_lm.AudioLM`'s, exactly as in the continuous LM; only the ends differ. A slot's
input is the sum of its Q codebook embeddings (each codebook has K codes plus a pad code), and
the decoder's output z feeds Q linear heads of K logits each. The loss is the cross-entropy
averaged over valid (slot, codebook) targets.

Codebook patterns (`pattern`), as in AudioGen and MusicGen:
  parallel  step t holds every codebook of frame t, all predicted from the steps before t;
            F frames take F steps.
  delay     codebook q is shifted by q steps: step s holds code q of frame s - q, and the pad
            code where s - q falls outside the clip; F frames take F + Q - 1 steps. Codebook q
            of a frame is then predicted after codebooks 0..q-1 of that frame are known. The loss
            ignores pads.

Steps play the role of tokens for the decoder (slots, rotary positions, the KV cache), so with
`delay` the model's context is max_len + Q - 1 steps for max_len frames.

MNTP on codes is defined on frames: a dropped frame loses all its codebooks, and offsets count
frames. That is direct with `parallel` (a step is a frame); with `delay` a step mixes codebooks of
Q different frames, so discrete MNTP is restricted to `parallel` (`check_config` says so).

Shape letters: B batch, L frames, S steps, Q codebooks, K codes per codebook, D model width.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import sharding
from almtok.models import audio_lm
from almtok.models import mntp
from almtok.models.audio_lm import AudioLM
from almtok.text.minilm import TextEmbedding

Array = jax.Array
Dtype = Any

PATTERNS = ("parallel", "delay")
# What each metric is a mean over: validation batches are weighted by these counts.
METRIC_WEIGHTS = {"ntp_loss": "ntp", "ntp_accuracy": "ntp", "mntp_loss": "mntp",
                  "mntp_kept_frac": "slots"}


class DiscreteLM(AudioLM):
  """Causal decoder over RVQ codes with a text prefix and Q softmax heads."""

  def __init__(self, num_codebooks: int, codebook_size: int, max_len: int, text_dim: int,
               text_len: int, decoder: dict, pattern: str = "delay", *,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    if pattern not in PATTERNS:
      raise ValueError(f"pattern={pattern!r}: must be one of {list(PATTERNS)}")
    self.num_codebooks, self.codebook_size, self.pattern = num_codebooks, codebook_size, pattern
    self.pad = codebook_size   # The pad code's index in every codebook.
    self.max_frames = max_len
    self.delay = num_codebooks - 1 if pattern == "delay" else 0
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # The decoder's context counts steps: max_len frames take max_len + delay steps.
    self.make_decoder(max_len + self.delay, text_len, decoder, kw)
    width = self.decoder.width
    self.head = nnx.Linear(width, num_codebooks * codebook_size, use_bias=False,
                           kernel_init=nnx.initializers.normal(0.02), **kw)
    self.make_prefix(text_dim, kw)
    # One table of Q x (K + 1) rows: row q * (K + 1) + c embeds code c of codebook q.
    self.code_embed = nnx.Embed(num_codebooks * (codebook_size + 1), width,
                                embedding_init=nnx.initializers.normal(0.02), **kw)
    self.make_offsets(kw)

  def embed_tokens(self, codes_BxLxQ: Array) -> Array:
    """The sum of each step's Q codebook embeddings (pad codes have their own rows)."""
    first_row_Q = jnp.arange(self.num_codebooks, dtype=jnp.int32) * (self.codebook_size + 1)
    rows_BxLxQ = codes_BxLxQ + first_row_Q[None, None, :]
    return jnp.sum(self.code_embed(rows_BxLxQ), axis=2)

  def logits(self, z_XxD: Array) -> Array:
    """Float32 logits [..., Q, K] of every codebook from decoder outputs [..., D]."""
    out = sharding.shard_rows(self.head(z_XxD).astype(jnp.float32))
    return out.reshape(*z_XxD.shape[:-1], self.num_codebooks, self.codebook_size)

  def __call__(self, text: TextEmbedding, use_null_B: Array, steps_BxSxQ: Array,
               slots: mntp.Slots) -> tuple[Array, Array]:
    """Teacher-forced pass over pattern steps; returns (logits_BxSxQxK float32, targets_BxSxQ)."""
    s = steps_BxSxQ.shape[1]
    if s > self.max_len:
      raise ValueError(f"{s} steps exceed the model's context of {self.max_len} steps")
    inputs_BxSxQ, targets_BxSxQ = mntp.inputs_and_targets(steps_BxSxQ, slots, fill=self.pad)
    audio_BxSxD = self.embed_slots(inputs_BxSxQ, slots.src_BxL, slots.offset_BxL)
    z_BxSxD = self.forward_slots(text, use_null_B, audio_BxSxD, slots)
    return self.logits(z_BxSxD), targets_BxSxQ


# ---------------------------------------------------------------------------------------------
# Codebook patterns.
# ---------------------------------------------------------------------------------------------


def delay_frames(num_steps: int, num_codebooks: int) -> Array:
  """[S, Q]: the frame whose code q step s holds under the delay pattern (s - q)."""
  return (jnp.arange(num_steps, dtype=jnp.int32)[:, None]
          - jnp.arange(num_codebooks, dtype=jnp.int32)[None, :])


def step_valid(mask_BxL: Array, num_codebooks: int, pattern: str) -> Array:
  """[B, S, Q]: which (step, codebook) pairs hold a real frame's code under the pattern.

  `mask_BxL` marks real frames, a prefix of each row. With `parallel`, steps are the frames;
  with `delay`, S = L + Q - 1 and step s, codebook q holds frame s - q.
  """
  b, l = mask_BxL.shape
  q = num_codebooks
  if pattern == "parallel":
    return jnp.broadcast_to(mask_BxL.astype(bool)[:, :, None], (b, l, q))
  frame_SxQ = delay_frames(l + q - 1, q)
  n_B = jnp.sum(mask_BxL.astype(jnp.int32), axis=1)
  return (frame_SxQ[None] >= 0) & (frame_SxQ[None] < n_B[:, None, None])


def to_steps(codes_BxLxQ: Array, mask_BxL: Array, pattern: str, pad: int
             ) -> tuple[Array, Array]:
  """Frames -> pattern steps: (steps_BxSxQ, valid_BxSxQ as `step_valid`), with the pad code
  where nothing is valid."""
  b, l, q = codes_BxLxQ.shape
  valid_BxSxQ = step_valid(mask_BxL, q, pattern)
  if pattern == "parallel":
    return jnp.where(valid_BxSxQ, codes_BxLxQ, pad), valid_BxSxQ
  frame_SxQ = delay_frames(l + q - 1, q)
  index_BxSxQ = jnp.broadcast_to(jnp.clip(frame_SxQ, 0, l - 1)[None], valid_BxSxQ.shape)
  steps_BxSxQ = jnp.take_along_axis(codes_BxLxQ, index_BxSxQ, axis=1)
  return jnp.where(valid_BxSxQ, steps_BxSxQ, pad), valid_BxSxQ


def to_frames(steps_BxSxQ: Array, num_frames: int, pattern: str) -> Array:
  """Pattern steps -> frames [B, num_frames, Q] (the inverse of `to_steps` on valid frames)."""
  if pattern == "parallel":
    return steps_BxSxQ[:, :num_frames]
  q = steps_BxSxQ.shape[2]
  index_LxQ = jnp.arange(num_frames)[:, None] + jnp.arange(q)[None, :]
  index_BxLxQ = jnp.broadcast_to(index_LxQ[None], (steps_BxSxQ.shape[0], num_frames, q))
  return jnp.take_along_axis(steps_BxSxQ, index_BxLxQ, axis=1)


# ---------------------------------------------------------------------------------------------
# Loss.
# ---------------------------------------------------------------------------------------------


def _targets(valid_BxSxQ: Array, rng: Array, example_index_B: Array | None,
             loss: audio_lm.LossConfig) -> tuple[audio_lm.Draws, Array]:
  """The draws over steps, and which (slot, codebook) pairs of NTP then MNTP have a target."""
  d = audio_lm.draw(rng, jnp.any(valid_BxSxQ, axis=2), example_index_B, loss)
  slots = audio_lm.stack_slots(d)
  copies = 1 if d.masked is None else 2
  valid_XxSxQ = jnp.concatenate([valid_BxSxQ] * copies, axis=0)
  target_valid = mntp.gather_tokens(valid_XxSxQ, slots.src_BxL + slots.offset_BxL)
  return d, target_valid & slots.valid_BxL[:, :, None]


def target_counts(mask_BxL: Array, rng: Array, example_index_B: Array | None = None, *,
                  num_codebooks: int, pattern: str, loss: audio_lm.LossConfig
                  ) -> dict[str, Array]:
  """The batch's counts that normalize the loss: valid (slot, codebook) targets of NTP and MNTP,
  examples, and NTP slots (see `continuous_lm.target_counts` for why a trainer needs them)."""
  d, target_valid_XxSxQ = _targets(step_valid(mask_BxL, num_codebooks, pattern), rng,
                                   example_index_B, loss)
  b = mask_BxL.shape[0]
  count = lambda rows: jnp.sum(target_valid_XxSxQ[rows].astype(jnp.float32))
  counts = {"ntp": count(slice(0, b)), "examples": jnp.float32(b),
            "slots": jnp.sum(d.ntp.valid_BxL.astype(jnp.float32))}
  if d.masked is not None:
    counts["mntp"] = count(slice(b, 2 * b))
  return counts


def loss_fn(model: DiscreteLM, text: TextEmbedding, codes_BxLxQ: Array, mask_BxL: Array,
            rng: Array, *, loss: audio_lm.LossConfig, example_index_B: Array | None = None,
            counts: dict[str, Array] | None = None) -> tuple[Array, dict[str, Array]]:
  """Training loss `loss.total(ntp, mntp)` (cross-entropies in nats) and its parts.

  Randomness, the MNTP stacking and `counts` work as in `continuous_lm.loss_fn`; each part is the
  mean over its valid (slot, codebook) targets.
  """
  steps_BxSxQ, valid_BxSxQ = to_steps(codes_BxLxQ, mask_BxL, model.pattern, model.pad)
  d, target_valid_XxSxQ = _targets(valid_BxSxQ, rng, example_index_B, loss)
  if counts is None:
    counts = target_counts(mask_BxL, rng, example_index_B, num_codebooks=model.num_codebooks,
                           pattern=model.pattern, loss=loss)
  copies = 1 if d.masked is None else 2
  repeat = lambda a: jnp.concatenate([a] * copies, axis=0)
  logits_XxSxQxK, targets_XxSxQ = model(jax.tree.map(repeat, text), repeat(d.use_null_B),
                                        repeat(steps_BxSxQ), audio_lm.stack_slots(d))
  # Targets at pads are never valid; clip them into range so the gather stays defined.
  targets_XxSxQ = jnp.minimum(targets_XxSxQ, model.codebook_size - 1)
  picked = jnp.take_along_axis(logits_XxSxQxK, targets_XxSxQ[..., None], axis=-1)[..., 0]
  ce_XxSxQ = jax.nn.logsumexp(logits_XxSxQxK, axis=-1) - picked
  hit_XxSxQ = (jnp.argmax(logits_XxSxQxK, axis=-1) == targets_XxSxQ).astype(jnp.float32)
  weight_XxSxQ = target_valid_XxSxQ.astype(jnp.float32)
  b = mask_BxL.shape[0]

  def mean(values, rows, name):
    return jnp.sum(values[rows] * weight_XxSxQ[rows]) / jnp.maximum(counts[name], 1.0)

  ntp = slice(0, b)
  metrics = {"ntp_loss": mean(ce_XxSxQ, ntp, "ntp"), "ntp_accuracy": mean(hit_XxSxQ, ntp, "ntp"),
             "cfg_drop_frac": jnp.sum(d.use_null_B.astype(jnp.float32)) / counts["examples"]}
  if d.masked is not None:
    masked = slice(b, 2 * b)
    metrics["mntp_loss"] = mean(ce_XxSxQ, masked, "mntp")
    metrics["mntp_kept_frac"] = (jnp.sum(d.masked.valid_BxL.astype(jnp.float32))
                                 / jnp.maximum(counts["slots"], 1.0))
  metrics["loss"] = total = loss.total(metrics["ntp_loss"], metrics.get("mntp_loss", 0.0))
  return total, metrics
