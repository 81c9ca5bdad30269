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


NAMES = ("mel", "mel_vae")


def get(name: str, **kwargs) -> AudioTokenizer:
  """The tokenizer called `name`, built with `kwargs`.

  `mel`: `mel.MelTokenizer(group=4, n_mels=64, vocoder=None)`.
  `mel_vae`: `mel_vae.MelVAETokenizer.load(path, vocoder=None)`, `path` naming a directory
  that holds mel_vae.safetensors + mel_vae.json (or either file).
  """
  # Imported here so that naming one tokenizer does not import the others' dependencies.
  if name == "mel":
    from almtok.tokenizers import mel  # pylint: disable=g-import-not-at-top
    return mel.MelTokenizer(**kwargs)
  if name == "mel_vae":
    from almtok.tokenizers import mel_vae  # pylint: disable=g-import-not-at-top
    return mel_vae.MelVAETokenizer.load(**kwargs)
  raise ValueError(f"unknown tokenizer {name!r}; choose one of {list(NAMES)}")


def from_stats(stats) -> AudioTokenizer:
  """The tokenizer that prepared latents were encoded with, from their stats
  (`latents.store.Stats`, whose `tokenizer` names it and its params)."""
  return get(stats.tokenizer.name, **stats.tokenizer.params)


def copy_weights(name: str, params: dict, directory: str) -> dict:
  """Copies the weights that tokenizer `name` built with `params` loads (if any) into
  `directory`, and returns the params that load the copy: a run keeps its own tokenizer."""
  if name == "mel_vae":
    from almtok import fileio  # pylint: disable=g-import-not-at-top
    from almtok.tokenizers import mel_vae  # pylint: disable=g-import-not-at-top
    weights, meta, _ = fileio.read_export(params["path"], mel_vae.EXPORT_NAME)
    fileio.write_export(directory, mel_vae.EXPORT_NAME, weights, meta, indent=2)
    return dict(params, path=directory)
  return dict(params)
