"""Masked next-token prediction: which tokens the decoder sees, and which token each slot predicts.

Both objectives are described by the same `Slots`: NTP is the special case with nothing dropped.

Input slots. Slot 0 is the start-of-audio token (source position -1). Slot j >= 1 holds a kept
token x[src_j], with src_1 < src_2 < ... in their original order. Dropped tokens are *removed*,
not zeroed: the kept ones move up to close the gaps, and the unused slots at the end are padding
(`valid` False). Each slot keeps its original position for the rotary embedding (src + 1 after
the prefix), so the decoder can see where the gaps are.

Targets. Slot j predicts x[tgt_j] with tgt_j drawn uniformly from (src_j, src_{j+1}]: one of the
dropped tokens between this kept token and the next one, or the next kept token itself. For the
last slot the range ends at the last real token. The prediction only ever looks ahead, so the
causal decoder never sees its target. `offset = tgt - src >= 1` selects the target-position
embedding; at inference nothing is dropped and the offset is always 1, i.e. plain NTP.

Drop ratio. Per sequence, r ~ a two-mode mixture of Beta distributions (one mode favouring high
ratios, one low), and floor(r * (n - 1)) of the n - 1 tokens that can be inputs are dropped
(the last real token is never an input). With r = 0 the slots are exactly NTP's.

Shape letters: B batch, L audio tokens (= slots), C token channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from almtok import rng as rng_lib

Array = jax.Array


class Slots(NamedTuple):
  """What the decoder sees per slot and what each slot is trained to predict."""
  src_BxL: Array      # int32 original position of the slot's input token; -1 for start-of-audio
  offset_BxL: Array   # int32 target position minus src (>= 1 on valid slots, 0 elsewhere)
  valid_BxL: Array    # bool: the slot holds an input and has a target


def ntp_slots(mask_BxL: Array) -> Slots:
  """Next-token prediction: slot j holds x[j - 1] (start-of-audio for j = 0) and predicts x[j]."""
  l = mask_BxL.shape[1]
  valid_BxL = mask_BxL.astype(bool)
  src_BxL = jnp.where(valid_BxL, jnp.arange(l, dtype=jnp.int32)[None, :] - 1, -1)
  return Slots(src_BxL, valid_BxL.astype(jnp.int32), valid_BxL)


def sample_drop_ratio(rng: Array, batch: int, mixture: Sequence[Sequence[float]]) -> Array:
  """Per-sequence drop ratios from a mixture of Betas, given as rows (weight, alpha, beta).

  `rng` is one key or one key per sequence (then each ratio depends on its own key only).
  """
  weights = jnp.asarray([m[0] for m in mixture], jnp.float32)
  alphas = jnp.asarray([m[1] for m in mixture], jnp.float32)
  betas = jnp.asarray([m[2] for m in mixture], jnp.float32)

  def draw(key):
    pick_rng, beta_rng = jax.random.split(key)
    mode = jax.random.categorical(pick_rng, jnp.log(weights))
    return jax.random.beta(beta_rng, alphas[mode], betas[mode])

  return jax.vmap(draw)(rng_lib.row_keys(rng, batch)).astype(jnp.float32)


def mntp_slots(rng: Array, mask_BxL: Array, ratio_B: Array) -> Slots:
  """Drops a fraction `ratio_B` of each sequence's input tokens and draws a target per slot.

  `mask_BxL` marks real tokens, which must form a prefix of each row (padding at the end).
  `rng` is one key or one key per row (then each row's slots depend on its own key only).
  """
  b, l = mask_BxL.shape
  drop_keys, target_keys = rng_lib.split_rows(rng_lib.row_keys(rng, b), 2)
  uniform_BxL = lambda keys: jax.vmap(lambda k: jax.random.uniform(k, (l,)))(keys)
  pos_L = jnp.arange(l, dtype=jnp.int32)
  n_B = jnp.sum(mask_BxL.astype(jnp.int32), axis=1)
  # Tokens 0 .. n-2 can be inputs; the last real token is only ever a target.
  candidate_BxL = pos_L[None, :] < (n_B - 1)[:, None]
  n_drop_B = jnp.floor(ratio_B * jnp.maximum(n_B - 1, 0)).astype(jnp.int32)
  score_BxL = jnp.where(candidate_BxL, uniform_BxL(drop_keys), 2.0)
  rank_BxL = jnp.argsort(jnp.argsort(score_BxL, axis=1), axis=1)
  keep_BxL = candidate_BxL & (rank_BxL >= n_drop_B[:, None])
  n_keep_B = jnp.sum(keep_BxL.astype(jnp.int32), axis=1)
  # Kept positions first, in their original order; the rest (unused) after them.
  kept_first_BxL = jnp.argsort(jnp.where(keep_BxL, pos_L[None, :], l + pos_L[None, :]),
                               axis=1).astype(jnp.int32)
  src_BxL = jnp.concatenate([jnp.full((b, 1), -1, jnp.int32), kept_first_BxL[:, :l - 1]], axis=1)
  valid_BxL = (pos_L[None, :] <= n_keep_B[:, None]) & (n_B > 0)[:, None]
  # The target range of slot j ends at the next slot's source, or at the last real token.
  is_last_BxL = pos_L[None, :] == n_keep_B[:, None]
  next_src_BxL = jnp.concatenate([src_BxL[:, 1:], jnp.zeros((b, 1), jnp.int32)], axis=1)
  end_BxL = jnp.where(is_last_BxL, (n_B - 1)[:, None], next_src_BxL)
  span_BxL = jnp.maximum(end_BxL - src_BxL, 1)
  draw_BxL = jnp.floor(uniform_BxL(target_keys) * span_BxL).astype(jnp.int32)
  offset_BxL = jnp.where(valid_BxL, 1 + jnp.minimum(draw_BxL, span_BxL - 1), 0)
  src_BxL = jnp.where(valid_BxL, src_BxL, -1)
  return Slots(src_BxL, offset_BxL.astype(jnp.int32), valid_BxL)


def gather_tokens(x_BxLxC: Array, pos_BxL: Array) -> Array:
  """x at the given positions per row (positions outside [0, L) read index 0, to be masked)."""
  l = x_BxLxC.shape[1]
  idx_BxL = jnp.clip(pos_BxL, 0, l - 1)
  return jnp.take_along_axis(x_BxLxC, idx_BxL[:, :, None], axis=1)


def inputs_and_targets(x_BxLxC: Array, slots: Slots, fill: float | int = 0.0
                       ) -> tuple[Array, Array]:
  """The token each slot reads (`fill` for start-of-audio and padding: 0.0 for continuous
  tokens, the pad code for codebook indices) and the one it predicts. The last axis is a
  token's channels, or its codebooks."""
  inputs_BxLxC = gather_tokens(x_BxLxC, slots.src_BxL)
  has_input_BxLx1 = (slots.valid_BxL & (slots.src_BxL >= 0))[:, :, None]
  inputs_BxLxC = jnp.where(has_input_BxLx1, inputs_BxLxC,
                           jnp.asarray(fill, inputs_BxLxC.dtype))
  targets_BxLxC = gather_tokens(x_BxLxC, slots.src_BxL + slots.offset_BxL)
  return inputs_BxLxC, targets_BxLxC
