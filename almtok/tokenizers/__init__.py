"""Audio tokenizers: waveform <-> continuous latents, chosen by name from a config.

Every tokenizer has `sample_rate`, `frame_rate` (tokens per second), `latent_dim` (C), and
`encode(wav_BxS) -> x_BxTxC`, `decode(x_BxTxC) -> wav_BxS`, batched and jittable where the math
allows. Latents leave `encode` unnormalized; per-channel normalization over the training set is
stored with the prepared data (stats.json) and applied by the data pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax


class AudioTokenizer(Protocol):
  sample_rate: int
  frame_rate: float
  latent_dim: int

  def encode(self, wav_BxS: jax.Array) -> jax.Array:
    ...

  def decode(self, x_BxTxC: jax.Array) -> jax.Array:
    ...


@dataclasses.dataclass(frozen=True)
class Spec:
  """What configs know of a tokenizer before one is built: its token geometry and the keyword
  arguments `get` builds it from. A trained mel_vae's export records its own geometry, and the
  prepared latents' stats.json what was used; training checks its model against the latter."""
  latent_dim: int              # C: channels of one token.
  frame_rate: float            # Tokens per second.
  params: dict[str, Any]       # `get`'s keyword arguments (a prepare config's tokenizer block).


# The registry: every tokenizer by name. Configs read token widths and frame rates from here.
REGISTRY = {
    # 64 mel bins of 4 frames at hop 160 and 16 kHz (`mel.MelTokenizer` defaults).
    "mel": Spec(latent_dim=256, frame_rate=25.0, params={}),
    # The paper's latent geometry: 8 channels x 16 frequency bins at 4x time down-sampling
    # (`mel_vae.MelVAE` defaults); `path` names the trained export.
    "mel_vae": Spec(latent_dim=128, frame_rate=25.0, params={"path": ""}),
}
NAMES = tuple(REGISTRY)


def spec(name: str) -> Spec:
  """The registry's entry for `name`; ValueError naming the known ones otherwise."""
  if name not in REGISTRY:
    raise ValueError(f"unknown tokenizer {name!r}; choose one of {list(NAMES)}")
  return REGISTRY[name]


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
