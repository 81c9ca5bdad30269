"""What the continuous and the discrete audio LMs share: the text prefix, the causal decoder over
[prefix | audio slots], the start-of-audio token, the target-offset embedding, and each example's
random draws (CFG drop, NTP and MNTP slots).

Sequence layout fed to the decoder (P = 1 + text_len prefix slots, L audio slots):

  [pooled text | text tokens (masked) | start-of-audio | tok[src_1] | tok[src_2] | ...]
   <------------------ prefix, P ----><-------------------- audio slots, L -------->

Prefix slots are the MiniLM sentence vector and token states, each projected to the model
width; with probability `cfg_dropout` in training the whole prefix is replaced by a learned
null prefix (used again as the unconditional branch of classifier-free guidance). Audio slot j
reads its input token (slot 0 reads the learned start-of-audio vector) plus the embedding of its
target offset (see `mntp.py`; 1 for plain next-token prediction). Rotary positions: prefix slot
i is at i, audio slot j at P + src_j + 1 (its original place).

A model subclasses `AudioLM`, builds its parts in its own `__init__` (the shared ones with
`make_decoder`, `make_prefix` and `make_offsets`) and says how an input token becomes a vector
(`embed_tokens`): a projection of a continuous token, or a sum of codebook embeddings.

Shape letters: B batch, L audio slots, P prefix slots, N text tokens, E text width, D model width.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import rng as rng_lib
from almtok import sharding
from almtok.models import mntp
from almtok.models.decoder import Decoder, KVCache
from almtok.text.minilm import TextEmbedding

Array = jax.Array
Dtype = Any


class AudioLM(nnx.Module):
  """Causal decoder over audio slots after a text prefix; subclasses add input and head, and
  define `embed_tokens(inputs_BxLx) -> [B, L, D]`, the input tokens of the audio slots as
  vectors."""

  max_len: int
  text_len: int
  prefix_len: int
  dtype: Dtype

  # ------------------------------------------------------------------------------------------
  # Shared parts, built by the subclass's __init__ in its own order.
  # ------------------------------------------------------------------------------------------

  def make_decoder(self, max_len: int, text_len: int, decoder: dict, kw: dict) -> None:
    self.max_len, self.text_len = max_len, text_len
    self.prefix_len = 1 + text_len
    self.dtype = kw["dtype"]
    self.decoder = Decoder(**decoder, **kw)

  def make_prefix(self, text_dim: int, kw: dict) -> None:
    """The text projections, the learned null prefix and the start-of-audio vector."""
    width = self.decoder.width
    init = nnx.initializers.normal(0.02)
    linear = dict(kernel_init=nnx.initializers.xavier_uniform(), **kw)
    self.pooled_proj = nnx.Linear(text_dim, width, **linear)
    self.text_proj = nnx.Linear(text_dim, width, **linear)
    self.null_prefix = nnx.Param(init(kw["rngs"].params(), (self.prefix_len, width),
                                      kw["param_dtype"]))
    self.start = nnx.Param(init(kw["rngs"].params(), (width,), kw["param_dtype"]))

  def make_offsets(self, kw: dict) -> None:
    # Offsets 1 .. max_len; row 0 is never used by a valid slot.
    self.offset_embed = nnx.Embed(self.max_len + 1, self.decoder.width,
                                  embedding_init=nnx.initializers.normal(0.02), **kw)

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
    tokens_BxNxD = sharding.shard_rows(self.text_proj(text.tokens_BxNxE.astype(self.dtype)))
    h_BxPxD = jnp.concatenate([pooled_Bx1xD, tokens_BxNxD], axis=1)
    mask_BxP = jnp.concatenate([jnp.ones((b, 1), bool), text.mask_BxN.astype(bool)], axis=1)
    null_BxPxD = jnp.broadcast_to(self.null_prefix[...].astype(h_BxPxD.dtype), h_BxPxD.shape)
    h_BxPxD = jnp.where(use_null_B[:, None, None], null_BxPxD, h_BxPxD)
    mask_BxP = jnp.where(use_null_B[:, None], True, mask_BxP)
    return h_BxPxD, mask_BxP

  def embed_slots(self, inputs_BxLx: Array, src_BxL: Array, offset_BxL: Array) -> Array:
    """Audio slot embeddings: start-of-audio or the embedded token, plus the target offset."""
    tokens_BxLxD = sharding.shard_rows(self.embed_tokens(inputs_BxLx))
    start_BxLxD = jnp.broadcast_to(self.start[...].astype(tokens_BxLxD.dtype), tokens_BxLxD.shape)
    h_BxLxD = jnp.where((src_BxL < 0)[:, :, None], start_BxLxD, tokens_BxLxD)
    return h_BxLxD + self.offset_embed(offset_BxL)

  def audio_positions(self, src_BxL: Array) -> Array:
    return self.prefix_len + src_BxL + 1

  # ------------------------------------------------------------------------------------------
  # Training-time forward pass.
  # ------------------------------------------------------------------------------------------

  def forward_slots(self, text: TextEmbedding, use_null_B: Array, audio_BxLxD: Array,
                    slots: mntp.Slots) -> Array:
    """Teacher-forced pass over embedded audio slots; returns z_BxLxD for the audio slots."""
    prefix_BxPxD, prefix_mask_BxP = self.prefix(text, use_null_B)
    b, p = prefix_mask_BxP.shape
    h_BxSxD = jnp.concatenate([prefix_BxPxD, audio_BxLxD.astype(prefix_BxPxD.dtype)], axis=1)
    positions_BxS = jnp.concatenate([jnp.broadcast_to(jnp.arange(p), (b, p)),
                                     self.audio_positions(slots.src_BxL)], axis=1)
    mask_BxS = jnp.concatenate([prefix_mask_BxP, slots.valid_BxL], axis=1)
    z_BxSxD, _ = self.decoder(h_BxSxD, positions_BxS, mask_BxS)
    return z_BxSxD[:, p:]

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

  def decode(self, inputs_BxSx: Array, first_index: Array, cache: KVCache
             ) -> tuple[Array, KVCache]:
    """Decodes audio slots first_index .. first_index + S - 1 on top of the cache.

    Slot j reads token j - 1 (start-of-audio for j = 0), so `inputs_BxSx[:, i]` is token
    first_index + i - 1; an input read as start-of-audio is ignored. Returns z_BxSxD, where
    z[:, i] conditions the prediction of token first_index + i, and the new cache.
    """
    b, s = inputs_BxSx.shape[:2]
    src_BxS = jnp.broadcast_to(first_index - 1 + jnp.arange(s, dtype=jnp.int32), (b, s))
    h_BxSxD = self.embed_slots(inputs_BxSx, src_BxS, jnp.ones((b, s), jnp.int32))
    return self.decoder(h_BxSxD, self.audio_positions(src_BxS), jnp.ones((b, s), bool), cache)

  def step(self, prev_Bx: Array, index: Array, cache: KVCache) -> tuple[Array, KVCache]:
    """One decoding step: slot `index` reads token index - 1; returns (z_BxD, cache)."""
    z_Bx1xD, cache = self.decode(prev_Bx[:, None], index, cache)
    return z_Bx1xD[:, 0], cache


# ---------------------------------------------------------------------------------------------
# Each example's random draws.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The objective's settings that both models share (`config.loss`): the CFG drop probability,
  the MNTP weight, and the drop-ratio mixture of MNTP (rows of (weight, alpha, beta); see
  `mntp.sample_drop_ratio`). The loss is `total(ntp, mntp)`."""
  cfg_dropout: float = 0.1
  mntp_weight: float = 1.0
  drop_mixture: tuple[tuple[float, float, float], ...] = ((0.5, 4.0, 1.5), (0.5, 1.5, 6.0))

  @classmethod
  def from_config(cls, loss: Mapping[str, Any]) -> LossConfig:
    """From a run's `config.loss` block (a ConfigDict or its JSON dict)."""
    return cls(cfg_dropout=float(loss["cfg_dropout"]), mntp_weight=float(loss["mntp_weight"]),
               drop_mixture=tuple(tuple(float(v) for v in row) for row in loss["drop_mixture"]))

  @property
  def mntp(self) -> bool:
    return self.mntp_weight > 0

  def total(self, ntp_loss: Array | float, mntp_loss: Array | float = 0.0) -> Array | float:
    """The training loss from its parts: ntp + mntp_weight * mntp."""
    return ntp_loss + self.mntp_weight * mntp_loss if self.mntp else ntp_loss


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
  ntp_keys_B: Array          # Keys of the NTP part's own draws (the diffusion head's).
  mntp_keys_B: Array         # Keys of the MNTP part's own draws.


def draw(rng: Array, mask_BxL: Array, example_index_B: Array | None, loss: LossConfig
         ) -> Draws:
  """Example b draws everything from `fold_in(rng, example_index_B[b])` (default index b)."""
  b = mask_BxL.shape[0]
  index_B = jnp.arange(b) if example_index_B is None else example_index_B
  cfg_k, ratio_k, drop_k, ntp_k, mntp_k = rng_lib.split_rows(
      rng_lib.example_keys(rng, index_B), 5)
  masked = None
  if loss.mntp:
    masked = mntp.mntp_slots(drop_k, mask_BxL,
                             mntp.sample_drop_ratio(ratio_k, b, loss.drop_mixture))
  return Draws(cfg_drop_mask(cfg_k, b, loss.cfg_dropout), mntp.ntp_slots(mask_BxL), masked,
               ntp_k, mntp_k)


def stack_slots(d: Draws) -> mntp.Slots:
  """The NTP slots, with the MNTP slots stacked after them on the batch axis when there are."""
  if d.masked is None:
    return d.ntp
  return jax.tree.map(lambda a, m: jnp.concatenate([a, m], axis=0), d.ntp, d.masked)
