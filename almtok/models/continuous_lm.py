"""The continuous-token audio LM: text prefix -> causal decoder -> z -> per-token diffusion head.

Sequence layout fed to the decoder (P = 1 + text_len prefix slots, L audio slots):

  [pooled text | text tokens (masked) | start-of-audio | x[src_1] | x[src_2] | ...]
   <------------------ prefix, P ----><------------------ audio slots, L ------->

Prefix slots are the MiniLM sentence vector and token states, each projected to the model
width; with probability `cfg_dropout` in training the whole prefix is replaced by a learned
null prefix (used again as the unconditional branch of classifier-free guidance). Audio slot j
reads its input token through `in_proj` (slot 0 reads the learned start-of-audio vector), plus the
embedding of its target offset (see `mntp.py`; 1 for plain next-token prediction). Rotary
positions: prefix slot i is at i, audio slot j at P + src_j + 1 (its original place).

The decoder's output z at audio slot j conditions the denoiser, which models p(x[tgt_j] | z_j).

Shape letters: B batch, L audio slots, P prefix slots, N text tokens, E text width,
D model width, C token channels.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import diffusion
from almtok import rng as rng_lib
from almtok.models import mntp
from almtok.models.decoder import Decoder, KVCache
from almtok.models.denoiser import Denoiser
from almtok.text.minilm import TextEmbedding

Array = jax.Array
Dtype = Any


class ContinuousLM(nnx.Module):
  """Causal decoder over continuous tokens with a text prefix and a diffusion head."""

  def __init__(self, token_dim: int, max_len: int, text_dim: int, text_len: int,
               decoder: dict, head: dict, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.token_dim, self.max_len, self.text_len = token_dim, max_len, text_len
    self.prefix_len = 1 + text_len
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.decoder = Decoder(**decoder, **kw)
    width = self.decoder.width
    self.head = Denoiser(token_dim, width, **head, **kw)
    init = nnx.initializers.normal(0.02)
    linear = dict(kernel_init=nnx.initializers.xavier_uniform(), **kw)
    self.pooled_proj = nnx.Linear(text_dim, width, **linear)
    self.text_proj = nnx.Linear(text_dim, width, **linear)
    self.null_prefix = nnx.Param(init(rngs.params(), (self.prefix_len, width), param_dtype))
    self.start = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.in_proj = nnx.Linear(token_dim, width, **linear)
    # Offsets 1 .. max_len; row 0 is never used by a valid slot.
    self.offset_embed = nnx.Embed(max_len + 1, width, embedding_init=init, **kw)

  # ------------------------------------------------------------------------------------------
  # Pieces of the input sequence.
  # ------------------------------------------------------------------------------------------

  def prefix(self, text: TextEmbedding, use_null_B: Array) -> tuple[Array, Array]:
    """Projected text prefix, or the null prefix where `use_null_B`; returns (h_BxPxD, mask_BxP)."""
    b, n, _ = text.tokens_BxNxE.shape
    if n != self.text_len:
      raise ValueError(f"text has {n} token slots, the model was built for text_len "
                       f"{self.text_len}")
    pooled_Bx1xD = self.pooled_proj(text.pooled_BxE.astype(self.dtype))[:, None, :]
    tokens_BxNxD = self.text_proj(text.tokens_BxNxE.astype(self.dtype))
    h_BxPxD = jnp.concatenate([pooled_Bx1xD, tokens_BxNxD], axis=1)
    mask_BxP = jnp.concatenate([jnp.ones((b, 1), bool), text.mask_BxN.astype(bool)], axis=1)
    null_BxPxD = jnp.broadcast_to(self.null_prefix[...].astype(h_BxPxD.dtype), h_BxPxD.shape)
    h_BxPxD = jnp.where(use_null_B[:, None, None], null_BxPxD, h_BxPxD)
    mask_BxP = jnp.where(use_null_B[:, None], True, mask_BxP)
    return h_BxPxD, mask_BxP

  def embed_slots(self, inputs_BxLxC: Array, src_BxL: Array, offset_BxL: Array) -> Array:
    """Audio slot embeddings: start-of-audio or projected token, plus the target offset."""
    tokens_BxLxD = self.in_proj(inputs_BxLxC.astype(self.dtype))
    start_BxLxD = jnp.broadcast_to(self.start[...].astype(tokens_BxLxD.dtype), tokens_BxLxD.shape)
    h_BxLxD = jnp.where((src_BxL < 0)[:, :, None], start_BxLxD, tokens_BxLxD)
    return h_BxLxD + self.offset_embed(offset_BxL)

  def audio_positions(self, src_BxL: Array) -> Array:
    return self.prefix_len + src_BxL + 1

  # ------------------------------------------------------------------------------------------
  # Training-time forward pass.
  # ------------------------------------------------------------------------------------------

  def __call__(self, text: TextEmbedding, use_null_B: Array, x_BxLxC: Array,
               slots: mntp.Slots) -> tuple[Array, Array]:
    """Teacher-forced pass; returns (z_BxLxD float32, targets_BxLxC) for the audio slots."""
    l = x_BxLxC.shape[1]
    if l > self.max_len:
      raise ValueError(f"{l} audio tokens exceed the model's max_len {self.max_len}")
    prefix_BxPxD, prefix_mask_BxP = self.prefix(text, use_null_B)
    inputs_BxLxC, targets_BxLxC = mntp.inputs_and_targets(x_BxLxC, slots)
    audio_BxLxD = self.embed_slots(inputs_BxLxC, slots.src_BxL, slots.offset_BxL)
    b, p = prefix_mask_BxP.shape
    h_BxSxD = jnp.concatenate([prefix_BxPxD, audio_BxLxD.astype(prefix_BxPxD.dtype)], axis=1)
    positions_BxS = jnp.concatenate([jnp.broadcast_to(jnp.arange(p), (b, p)),
                                     self.audio_positions(slots.src_BxL)], axis=1)
    mask_BxS = jnp.concatenate([prefix_mask_BxP, slots.valid_BxL], axis=1)
    z_BxSxD, _ = self.decoder(h_BxSxD, positions_BxS, mask_BxS)
    return z_BxSxD[:, p:], targets_BxLxC

  # ------------------------------------------------------------------------------------------
  # Decoding with the KV cache.
  # ------------------------------------------------------------------------------------------

  def init_cache(self, batch: int, num_audio: int | None = None) -> KVCache:
    """An empty cache with room for the prefix and `num_audio` (default max_len) audio slots."""
    return self.decoder.init_cache(batch, self.prefix_len + (num_audio or self.max_len))

  def prefill(self, text: TextEmbedding, use_null_B: Array, cache: KVCache) -> KVCache:
    """Writes the prefix into an empty cache."""
    prefix_BxPxD, mask_BxP = self.prefix(text, use_null_B)
    b, p = mask_BxP.shape
    _, cache = self.decoder(prefix_BxPxD, jnp.broadcast_to(jnp.arange(p), (b, p)), mask_BxP,
                            cache)
    return cache

  def extend(self, inputs_BxSxC: Array, first_index: Array, cache: KVCache
             ) -> tuple[Array, KVCache]:
    """Decodes audio slots first_index .. first_index + S - 1 on top of the cache.

    Slot j reads x[j - 1] (start-of-audio for j = 0), so `inputs_BxSxC[:, i]` is
    x[first_index + i - 1]; an input read as start-of-audio is ignored. Returns z_BxSxD, where
    z[:, i] conditions the head's prediction of x[first_index + i], and the new cache.
    """
    b, s, _ = inputs_BxSxC.shape
    src_BxS = jnp.broadcast_to(first_index - 1 + jnp.arange(s, dtype=jnp.int32), (b, s))
    h_BxSxD = self.embed_slots(inputs_BxSxC, src_BxS, jnp.ones((b, s), jnp.int32))
    return self.decoder(h_BxSxD, self.audio_positions(src_BxS), jnp.ones((b, s), bool), cache)

  def step(self, prev_BxC: Array, index: Array, cache: KVCache) -> tuple[Array, KVCache]:
    """One decoding step: slot `index` reads x[index - 1]; returns (z_BxD, cache)."""
    z_Bx1xD, cache = self.extend(prev_BxC[:, None, :], index, cache)
    return z_Bx1xD[:, 0], cache


def cfg_drop_mask(rng: Array, batch: int, cfg_dropout: float) -> Array:
  """Which examples train unconditionally (null prefix): each with probability cfg_dropout.

  `rng` is one key or one key per example.
  """
  keys_B = rng_lib.row_keys(rng, batch)
  return jax.vmap(lambda k: jax.random.uniform(k))(keys_B) < cfg_dropout


class Draws(NamedTuple):
  """An example's random choices that do not depend on the model, and its keys for the rest."""
  use_null_B: Array          # bool: the null prefix (CFG dropout).
  ntp: mntp.Slots
  masked: mntp.Slots | None  # MNTP slots (None without MNTP).
  ntp_keys_B: Array          # Keys of the NTP part's diffusion draws.
  mntp_keys_B: Array         # Keys of the MNTP part's diffusion draws.


def draw(rng: Array, mask_BxL: Array, example_index_B: Array | None, *, cfg_dropout: float,
         mntp_weight: float, drop_mixture) -> Draws:
  """Example b draws everything from `fold_in(rng, example_index_B[b])` (default index b)."""
  b = mask_BxL.shape[0]
  index_B = jnp.arange(b) if example_index_B is None else example_index_B
  cfg_k, ratio_k, drop_k, ntp_k, mntp_k = rng_lib.split_rows(
      rng_lib.example_keys(rng, index_B), 5)
  masked = None
  if mntp_weight > 0:
    masked = mntp.mntp_slots(drop_k, mask_BxL, mntp.sample_drop_ratio(ratio_k, b, drop_mixture))
  return Draws(cfg_drop_mask(cfg_k, b, cfg_dropout), mntp.ntp_slots(mask_BxL), masked,
               ntp_k, mntp_k)


def target_counts(mask_BxL: Array, rng: Array, example_index_B: Array | None = None, *,
                  cfg_dropout: float, mntp_weight: float, drop_mixture) -> dict[str, Array]:
  """The batch's counts that normalise the loss: valid NTP and MNTP targets, and examples.

  A trainer that splits a batch into micro-batches passes the whole batch's counts to each
  part's `loss_fn`, so that the parts' losses (and gradients) add up to the whole batch's.
  """
  d = draw(rng, mask_BxL, example_index_B, cfg_dropout=cfg_dropout, mntp_weight=mntp_weight,
           drop_mixture=drop_mixture)
  counts = {"ntp": jnp.sum(d.ntp.valid_BxL.astype(jnp.float32)),
            "examples": jnp.float32(mask_BxL.shape[0])}
  if d.masked is not None:
    counts["mntp"] = jnp.sum(d.masked.valid_BxL.astype(jnp.float32))
  return counts


def loss_fn(model: ContinuousLM, text: TextEmbedding, x_BxLxC: Array, mask_BxL: Array,
            rng: Array, *, schedule: diffusion.Schedule, cfg_dropout: float,
            mntp_weight: float, drop_mixture, batch_mul: int, prediction: str,
            example_index_B: Array | None = None, counts: dict[str, Array] | None = None
            ) -> tuple[Array, dict[str, Array]]:
  """Training loss `ntp + mntp_weight * mntp` and its parts (float32).

  Each part is the mean of the head's loss over its valid targets. One decoder call runs the NTP
  sequences and, when `mntp_weight > 0`, their MNTP versions stacked on the batch axis; both
  share each example's prefix (and its CFG drop).

  Randomness is per example (see `draw`): `rng` is the step's key and `example_index_B` the
  examples' places in the whole batch. With `counts` (the whole batch's `target_counts`) this
  batch is one part of it: each part then divides by the whole batch's counts, so the parts'
  losses, metrics and gradients sum to the whole batch's exactly (up to float rounding).
  """
  kw = dict(cfg_dropout=cfg_dropout, mntp_weight=mntp_weight, drop_mixture=drop_mixture)
  b, l, c = x_BxLxC.shape
  d = draw(rng, mask_BxL, example_index_B, **kw)
  if counts is None:
    counts = target_counts(mask_BxL, rng, example_index_B, **kw)
  if d.masked is not None:
    slots = jax.tree.map(lambda a, m: jnp.concatenate([a, m], axis=0), d.ntp, d.masked)
    twice = lambda a: jnp.concatenate([a, a], axis=0)
    z_XxLxD, targets_XxLxC = model(jax.tree.map(twice, text), twice(d.use_null_B),
                                   twice(x_BxLxC), slots)
  else:
    slots = d.ntp
    z_XxLxD, targets_XxLxC = model(text, d.use_null_B, x_BxLxC, slots)

  def part(rows, keys_B, name):
    # Token (b, j) draws its timesteps and noise from its example's key folded with j.
    token_keys_BxL = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(
        jnp.arange(l)))(keys_B)
    total, _ = diffusion.diffusion_loss_terms(
        model.head, schedule, targets_XxLxC[rows].reshape(-1, c),
        z_XxLxD[rows].reshape(b * l, -1), slots.valid_BxL[rows].reshape(-1),
        token_keys_BxL.reshape(b * l, *token_keys_BxL.shape[2:]), batch_mul=batch_mul,
        prediction=prediction)
    return total / jnp.maximum(batch_mul * counts[name], 1.0)

  ntp_loss = part(slice(0, b), d.ntp_keys_B, "ntp")
  metrics = {"ntp_loss": ntp_loss,
             "cfg_drop_frac": jnp.sum(d.use_null_B.astype(jnp.float32)) / counts["examples"]}
  loss = ntp_loss
  if d.masked is not None:
    mntp_loss = part(slice(b, 2 * b), d.mntp_keys_B, "mntp")
    kept = jnp.sum(d.masked.valid_BxL.astype(jnp.float32)) / jnp.maximum(counts["ntp"], 1.0)
    metrics.update(mntp_loss=mntp_loss, mntp_kept_frac=kept)
    loss = loss + mntp_weight * mntp_loss
  metrics["loss"] = loss
  return loss, metrics
