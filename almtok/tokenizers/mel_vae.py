"""A 2-D convolutional VAE over log-mel spectrograms, and the `mel_vae` tokenizer built on it.

The mel (dB) is treated as an image with time as height and mel bins as width. The encoder
halves both axes once per extra entry of `channels` (three entries: 4x in time and frequency),
so 64 bins at 100 frames per second become L = 8 channels x K = 16 bins at 25 Hz: 128-d
tokens. The decoder mirrors it and predicts the mel in dB.

Input scaling: the model sees (dB - db_offset) / db_scale, by default (dB + 50) / 30, which
maps the -100 dB floor to -1.67 and loud bins (around 0 dB) to about +1.7; outputs are mapped
back with the same constants and floored at -100 dB.

Normalization: GroupNorm statistics are taken separately for every time frame (over frequency
and the group's channels), never across time, so a frame's code depends only on the frames
within the convolutions' receptive field: away from their edges, crops, whole clips and padded
clips encode alike.

Token layout: the latent [B, T, K, L] is flattened frequency-major, so channel `k · L + l` of
a token holds latent channel l of latent frequency bin k. `encode` returns the posterior mean;
the training loss samples the posterior (reparameterised).

KL term: with the loss normalized per mel element, loss = mean |M̂ - M| (scaled units) +
kl_weight · Σ KL / (number of mel elements), i.e. the usual "sum of L1 + weight · sum of KL"
divided by a constant.

Shape letters: B batch, M mel bins, F frames, T tokens (= F // D), D the down-sampling factor,
K latent frequency bins (= M // D), L latent channels, C = K · L token channels, H hidden
channels, S samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from almtok import audio
from almtok import checkpoint
from almtok import fileio
from almtok.tokenizers import melspec
from almtok.tokenizers import vocoder as vocoder_lib

Array = jax.Array

EXPORT_NAME = "mel_vae"   # <dir>/mel_vae.safetensors + <dir>/mel_vae.json.
FORMAT_VERSION = 1
_LOGVAR_RANGE = (-30.0, 20.0)


class FrameGroupNorm(nnx.Module):
  """GroupNorm over (frequency, channels in the group), separately for every time frame."""

  def __init__(self, channels: int, num_groups: int, *, dtype: Any, rngs: nnx.Rngs):
    self.norm = nnx.GroupNorm(channels, num_groups=min(num_groups, channels), epsilon=1e-5,
                              dtype=dtype, rngs=rngs)

  def __call__(self, x_BxFxKxH: Array) -> Array:
    b, f, k, h = x_BxFxKxH.shape
    return self.norm(x_BxFxKxH.reshape(b * f, k, h)).reshape(b, f, k, h)


class ResBlock(nnx.Module):
  """x + conv(silu(norm(conv(silu(norm(x)))))), with a 1x1 projection when widths differ."""

  def __init__(self, in_channels: int, out_channels: int, *, num_groups: int, dtype: Any,
               rngs: nnx.Rngs):
    self.norm1 = FrameGroupNorm(in_channels, num_groups, dtype=dtype, rngs=rngs)
    self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), dtype=dtype, rngs=rngs)
    self.norm2 = FrameGroupNorm(out_channels, num_groups, dtype=dtype, rngs=rngs)
    # Zero-initialised so that every block starts as the identity (plus projection).
    self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), dtype=dtype,
                          kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
    self.skip = (nnx.Conv(in_channels, out_channels, (1, 1), dtype=dtype, rngs=rngs)
                 if in_channels != out_channels else None)

  def __call__(self, x_BxFxKxH: Array) -> Array:
    h = self.conv1(nnx.silu(self.norm1(x_BxFxKxH)))
    h = self.conv2(nnx.silu(self.norm2(h)))
    skip = self.skip(x_BxFxKxH) if self.skip is not None else x_BxFxKxH
    return skip + h


class Encoder(nnx.Module):
  """Scaled mel [B, F, M, 1] -> posterior (mean, log-variance), each [B, F/D, M/D, L]."""

  def __init__(self, channels: Sequence[int], num_blocks: int, latent_channels: int, *,
               num_groups: int, dtype: Any, rngs: nnx.Rngs):
    kw = dict(num_groups=num_groups, dtype=dtype, rngs=rngs)
    self.conv_in = nnx.Conv(1, channels[0], (3, 3), dtype=dtype, rngs=rngs)
    blocks, downs = [], []
    width = channels[0]
    for level, out in enumerate(channels):
      stage = []
      for _ in range(num_blocks):
        stage.append(ResBlock(width, out, **kw))
        width = out
      blocks.append(nnx.List(stage))
      if level < len(channels) - 1:
        downs.append(nnx.Conv(width, width, (3, 3), strides=(2, 2), dtype=dtype, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.downs = nnx.List(downs)
    self.mid = ResBlock(width, width, **kw)
    self.norm_out = FrameGroupNorm(width, num_groups, dtype=dtype, rngs=rngs)
    self.conv_out = nnx.Conv(width, 2 * latent_channels, (3, 3), dtype=dtype, rngs=rngs)

  def __call__(self, x_BxFxMx1: Array) -> tuple[Array, Array]:
    h = self.conv_in(x_BxFxMx1)
    for level, stage in enumerate(self.blocks):
      for block in stage:
        h = block(h)
      if level < len(self.downs):
        h = self.downs[level](h)
    h = self.conv_out(nnx.silu(self.norm_out(self.mid(h))))
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *_LOGVAR_RANGE)


class Decoder(nnx.Module):
  """Latent [B, T, K, L] -> scaled mel [B, T · D, K · D, 1].

  Each level runs its blocks at its own width, then up-samples (nearest, 2x on both axes) with
  a 3x3 convolution that already narrows to the next level's width, which keeps the
  full-resolution work small.
  """

  def __init__(self, channels: Sequence[int], num_blocks: int, latent_channels: int, *,
               num_groups: int, dtype: Any, rngs: nnx.Rngs):
    kw = dict(num_groups=num_groups, dtype=dtype, rngs=rngs)
    width = channels[-1]
    self.conv_in = nnx.Conv(latent_channels, width, (3, 3), dtype=dtype, rngs=rngs)
    self.mid = ResBlock(width, width, **kw)
    blocks, ups = [], []
    for level in reversed(range(len(channels))):
      blocks.append(nnx.List([ResBlock(width, width, **kw) for _ in range(num_blocks)]))
      if level > 0:
        ups.append(nnx.Conv(width, channels[level - 1], (3, 3), dtype=dtype, rngs=rngs))
        width = channels[level - 1]
    self.blocks = nnx.List(blocks)
    self.ups = nnx.List(ups)
    self.norm_out = FrameGroupNorm(width, num_groups, dtype=dtype, rngs=rngs)
    self.conv_out = nnx.Conv(width, 1, (3, 3), dtype=dtype, rngs=rngs)

  def __call__(self, z_BxTxKxL: Array) -> Array:
    h = self.mid(self.conv_in(z_BxTxKxL))
    for level, stage in enumerate(self.blocks):
      for block in stage:
        h = block(h)
      if level < len(self.ups):
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = self.ups[level](h)
    return self.conv_out(nnx.silu(self.norm_out(h))).astype(jnp.float32)


class MelVAE(nnx.Module):
  """Mel (dB) [B, M, F] <-> tokens [B, F // D, (M // D) · L]; see the module docstring."""

  def __init__(self, *, n_mels: int = audio.N_MELS, channels: Sequence[int] = (32, 64, 96),
               num_blocks: int = 1, latent_channels: int = 8, num_groups: int = 8,
               db_offset: float = -50.0, db_scale: float = 30.0, dtype: str = "float32",
               rngs: nnx.Rngs):
    self.downsample = 2 ** (len(channels) - 1)
    if n_mels % self.downsample:
      raise ValueError(f"n_mels={n_mels} is not a multiple of the down-sampling "
                       f"{self.downsample} that {len(channels)} channel levels give")
    self.n_mels = n_mels
    self.latent_channels = latent_channels
    self.latent_bins = n_mels // self.downsample
    self.latent_dim = self.latent_bins * latent_channels
    self.db_offset = db_offset
    self.db_scale = db_scale
    compute = jnp.dtype(dtype)
    kw = dict(num_groups=num_groups, dtype=compute, rngs=rngs)
    self.encoder = Encoder(tuple(channels), num_blocks, latent_channels, **kw)
    self.decoder = Decoder(tuple(channels), num_blocks, latent_channels, **kw)

  def scale(self, mel_dB_BxMxF: Array) -> Array:
    return (jnp.asarray(mel_dB_BxMxF, jnp.float32) - self.db_offset) / self.db_scale

  def unscale(self, y_BxMxF: Array) -> Array:
    return jnp.maximum(y_BxMxF * self.db_scale + self.db_offset, melspec.FLOOR_DB)

  def _crop(self, mel_dB_BxMxF: Array) -> Array:
    frames = mel_dB_BxMxF.shape[2] // self.downsample * self.downsample
    if mel_dB_BxMxF.shape[1] != self.n_mels or frames == 0:
      raise ValueError(f"expected mel [batch, {self.n_mels}, >= {self.downsample} frames], "
                       f"got {mel_dB_BxMxF.shape}")
    return mel_dB_BxMxF[:, :, :frames]

  def posterior(self, mel_dB_BxMxF: Array) -> tuple[Array, Array]:
    """(mean, log-variance) as tokens, each [B, T, C]; trailing frames beyond T · D dropped."""
    x_BxFxMx1 = jnp.swapaxes(self.scale(self._crop(mel_dB_BxMxF)), 1, 2)[..., None]
    mean_BxTxKxL, logvar_BxTxKxL = self.encoder(x_BxFxMx1)
    b, t = mean_BxTxKxL.shape[:2]
    return mean_BxTxKxL.reshape(b, t, -1), logvar_BxTxKxL.reshape(b, t, -1)

  def decode_scaled(self, z_BxTxC: Array) -> Array:
    """Tokens -> the model's scaled mel [B, M, T · D] (no floor), for the loss."""
    b, t, c = z_BxTxC.shape
    if c != self.latent_dim:
      raise ValueError(f"expected tokens of width {self.latent_dim}, got {z_BxTxC.shape}")
    z_BxTxKxL = z_BxTxC.reshape(b, t, self.latent_bins, self.latent_channels)
    return jnp.swapaxes(self.decoder(z_BxTxKxL)[..., 0], 1, 2)

  def encode(self, mel_dB_BxMxF: Array) -> Array:
    """Posterior mean tokens [B, F // D, C]."""
    return self.posterior(mel_dB_BxMxF)[0]

  def decode(self, z_BxTxC: Array) -> Array:
    """Mel in dB [B, M, T · D], floored at -100 dB."""
    return self.unscale(self.decode_scaled(z_BxTxC))


def init(model_kwargs: Mapping[str, Any], seed: int) -> MelVAE:
  """A freshly initialised `MelVAE`, built in one jit.

  Initialised eagerly, every initialiser compiles on its own, and threefry random numbers
  compile slowly on XLA:CPU (about 25 s for this model); an "rbg" key compiles in a few seconds.
  """
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: MelVAE(**model_kwargs, rngs=nnx.Rngs(0))))
  key = jax.random.key(seed, impl="rbg")
  params = jax.jit(lambda k: nnx.state(MelVAE(**model_kwargs, rngs=nnx.Rngs(k))))(key)
  return nnx.merge(graphdef, params)


# ---------------------------------------------------------------------------------------------
# Loss.
# ---------------------------------------------------------------------------------------------


def kl_divergence(mean: Array, logvar: Array) -> Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per element, float32."""
  mean = mean.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def loss_fn(model: MelVAE, mel_dB_BxMxF: Array, rng: Array,
            kl_weight: float) -> tuple[Array, dict[str, Array]]:
  """Reparameterised VAE loss on a batch of mels whose frame count is a multiple of D.

  Returns (loss, metrics) with recon_l1_db (mean absolute error in dB, before the floor), kl
  (mean KL per latent element) and kl_per_token (summed over the C channels).
  """
  mel_dB_BxMxF = model._crop(mel_dB_BxMxF)  # pylint: disable=protected-access
  mean_BxTxC, logvar_BxTxC = model.posterior(mel_dB_BxMxF)
  eps_BxTxC = jax.random.normal(rng, mean_BxTxC.shape, jnp.float32)
  z_BxTxC = mean_BxTxC + jnp.exp(0.5 * logvar_BxTxC) * eps_BxTxC
  y_hat_BxMxF = model.decode_scaled(z_BxTxC)
  recon_l1 = jnp.mean(jnp.abs(y_hat_BxMxF - model.scale(mel_dB_BxMxF)))
  kl_BxTxC = kl_divergence(mean_BxTxC, logvar_BxTxC)
  kl_per_mel_element = jnp.sum(kl_BxTxC) / mel_dB_BxMxF.size
  loss = recon_l1 + kl_weight * kl_per_mel_element
  metrics = dict(loss=loss, recon_l1_db=recon_l1 * model.db_scale, kl=jnp.mean(kl_BxTxC),
                 kl_per_token=jnp.mean(jnp.sum(kl_BxTxC, axis=-1)),
                 posterior_std=jnp.mean(jnp.exp(0.5 * logvar_BxTxC)))
  return loss, metrics


# ---------------------------------------------------------------------------------------------
# Export: safetensors weights + a JSON description, no pickle.
# ---------------------------------------------------------------------------------------------


def export(model: MelVAE, model_config: Mapping[str, Any], directory: str,
           extra: Mapping[str, Any] | None = None) -> tuple[str, str]:
  """Writes <directory>/mel_vae.safetensors and mel_vae.json; returns both paths.

  The weights also live under their content hash (mel_vae-<sha256[:16]>.safetensors), which the
  JSON names; `load_model` reads the pair the JSON describes (`fileio.write_export`).

  `model_config` holds the `MelVAE` keyword arguments that rebuild the architecture.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  description = dict(format_version=FORMAT_VERSION, model=_jsonable(dict(model_config)),
                     sample_rate=audio.SAMPLE_RATE, hop_length=audio.HOP_LENGTH,
                     n_fft=audio.N_FFT, win_length=audio.WIN_LENGTH,
                     frame_rate=audio.SAMPLE_RATE / audio.HOP_LENGTH / model.downsample,
                     latent_dim=model.latent_dim, token_layout="frequency-major (k * L + l)",
                     encode="posterior mean", **_jsonable(dict(extra or {})))
  # The JSON is the manifest, written last, naming the weights by content hash: a reader never
  # pairs one export's JSON with another's weights, even after a kill mid-export.
  return fileio.write_export(directory, EXPORT_NAME, st_numpy.save(checkpoint.flat_params(model)),
                             description, indent=2)


def load_model(path: str) -> tuple[MelVAE, dict[str, Any]]:
  """Rebuilds the model from a directory holding the export, or from either of its files.

  Raises:
    ValueError: the weights do not match the architecture the JSON describes.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  data, description, meta_path = fileio.read_export(path, EXPORT_NAME)
  base = meta_path.removesuffix(".json")
  if description.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{base}.json: format_version {description.get('format_version')} is not "
                     f"{FORMAT_VERSION}")
  model_kwargs = dict(description["model"])
  model_kwargs["channels"] = tuple(model_kwargs["channels"])
  abstract = nnx.eval_shape(lambda: MelVAE(**model_kwargs, rngs=nnx.Rngs(0)))
  model = checkpoint.with_flat_params(abstract, st_numpy.load(data), f"{base}.safetensors")
  return model, description


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


# ---------------------------------------------------------------------------------------------
# Tokenizer.
# ---------------------------------------------------------------------------------------------


class MelVAETokenizer:
  """`AudioTokenizer` over a trained `MelVAE`: 128-d posterior-mean tokens at 25 Hz by default.

  `encode` (and the mel-level methods) are jittable; `decode` runs the vocoder on the host.
  Mels use S // hop frames (`melspec.log_mel(..., drop_last=True)`), so a clip of S samples
  gives (S // hop) // D tokens.
  """

  def __init__(self, model: MelVAE, vocoder: vocoder_lib.Vocoder | None = None):
    self.sample_rate = audio.SAMPLE_RATE
    self.hop_length = audio.HOP_LENGTH
    self.n_mels = model.n_mels
    self.group = model.downsample
    self.frame_rate = self.sample_rate / self.hop_length / model.downsample
    self.latent_dim = model.latent_dim
    self.vocoder = vocoder or vocoder_lib.GriffinLim(sample_rate=self.sample_rate,
                                                     hop_length=self.hop_length)
    self._graphdef, self._params = nnx.split(model)
    self._encode_mel = jax.jit(lambda params, mel: nnx.merge(self._graphdef, params).encode(mel))
    self._decode_mel = jax.jit(lambda params, x: nnx.merge(self._graphdef, params).decode(x))
    self._encode = jax.jit(lambda params, wav: self._encode_mel(params, self.mel(wav)))

  @classmethod
  def load(cls, path: str, vocoder: vocoder_lib.Vocoder | None = None) -> MelVAETokenizer:
    """From the export written by `export` (a directory, or the .safetensors / .json path)."""
    model, _ = load_model(path)
    return cls(model, vocoder)

  @property
  def model(self) -> MelVAE:
    return nnx.merge(self._graphdef, self._params)

  def mel(self, wav_BxS: Array) -> Array:
    """Log-mel in dB [B, M, S // hop]. Jittable."""
    return melspec.log_mel(wav_BxS, sample_rate=self.sample_rate, n_mels=self.n_mels,
                           hop_length=self.hop_length, drop_last=True)

  def encode_mel(self, mel_dB_BxMxF: Array) -> Array:
    """Posterior-mean tokens [B, F // D, C]. Jittable."""
    return self._encode_mel(self._params, mel_dB_BxMxF)

  def decode_mel(self, x_BxTxC: Array) -> Array:
    """Mel in dB [B, M, T · D]. Jittable."""
    return self._decode_mel(self._params, x_BxTxC)

  def encode(self, wav_BxS: Array) -> Array:
    """Tokens [B, (S // hop) // D, C]. Jittable."""
    return self._encode(self._params, wav_BxS)

  def decode(self, x_BxTxC: Array) -> np.ndarray:
    """Waveforms [B, T · D · hop] through the vocoder (host numpy; not jittable)."""
    return self.vocoder.mel_to_wav(np.asarray(self.decode_mel(jnp.asarray(x_BxTxC))))
