"""Audio tokenizers: waveform <-> continuous latents, chosen by name from a config.

Every tokenizer has `sample_rate`, `frame_rate` (tokens per second), `latent_dim` (C), and
`encode(wav_BxS) -> x_BxTxC`, `decode(x_BxTxC) -> wav_BxS`, batched and jittable where the math
allows. Latents leave `encode` unnormalised; per-channel normalisation over the training set is
stored with the prepared data (stats.json) and applied by the data pipeline.
"""

from __future__ import annotations

from typing import Protocol

import jax


class AudioTokenizer(Protocol):
  sample_rate: int
  frame_rate: float
  latent_dim: int

  def encode(self, wav_BxS: jax.Array) -> jax.Array:
    ...

  def decode(self, x_BxTxC: jax.Array) -> jax.Array:
    ...
