"""Log-mel spectrogram in JAX: batched, jittable, and equal to `almtok.audio.log_mel`.

Same definition as the numpy reference: centred frames (reflect padding of n_fft // 2), a
periodic Hann window of `win_length` centred in `n_fft`, STFT magnitude (power 1), a Slaney mel
filterbank, dB with a floor of 20·log10(audio.MEL_FLOOR) = -100 dB. The filterbank is a numpy
constant built once per setting by librosa at trace time.

Shape letters: B batch, S samples, M mel bins, F frames, N FFT size, K = N // 2 + 1 FFT bins.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from almtok import audio

Array = jax.Array

FLOOR_DB = float(20.0 * np.log10(audio.MEL_FLOOR))   # -100 dB.


def num_frames(num_samples: int, hop_length: int = audio.HOP_LENGTH,
               drop_last: bool = False) -> int:
  """Frames for a signal of `num_samples`: 1 + S // hop, or S // hop with `drop_last`."""
  return num_samples // hop_length + (0 if drop_last else 1)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, win_length: int) -> np.ndarray:
  from scipy import signal  # pylint: disable=g-import-not-at-top
  window = signal.get_window("hann", win_length, fftbins=True).astype(np.float32)
  return np.pad(window, ((n_fft - win_length) // 2, (n_fft - win_length + 1) // 2))


@functools.lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  return audio.mel_filterbank(sample_rate, n_fft, n_mels)


def log_mel(wav_BxS: Array, sample_rate: int = audio.SAMPLE_RATE, n_mels: int = audio.N_MELS,
            hop_length: int = audio.HOP_LENGTH, n_fft: int = audio.N_FFT,
            win_length: int = audio.WIN_LENGTH, drop_last: bool = False) -> Array:
  """Log-mel in dB, float32 [B, M, F], F = 1 + S // hop_length (S // hop_length if `drop_last`).

  `drop_last` leaves out the final centred frame, so that S = F · hop_length for signals whose
  length is a multiple of the hop (frame f covers samples around f · hop_length).
  """
  wav_BxS = jnp.asarray(wav_BxS, jnp.float32)
  if wav_BxS.ndim != 2 or wav_BxS.shape[1] == 0:
    raise ValueError(f"log_mel expects a non-empty [batch, samples] array, got {wav_BxS.shape}")
  num_samples = wav_BxS.shape[1]
  pad = n_fft // 2
  # As in the numpy reference: reflect padding needs more samples than the pad.
  mode = "reflect" if num_samples > pad else "constant"
  padded_BxP = jnp.pad(wav_BxS, ((0, 0), (pad, pad)), mode=mode)
  frames = num_frames(num_samples, hop_length, drop_last)
  if frames < 1:
    raise ValueError(f"{num_samples} samples give no frame with hop {hop_length}")
  idx_FxN = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]
  frames_BxFxN = padded_BxP[:, idx_FxN] * jnp.asarray(_window(n_fft, win_length))[None, None, :]
  mag_BxFxK = jnp.abs(jnp.fft.rfft(frames_BxFxN, axis=-1)).astype(jnp.float32)
  bank_MxK = jnp.asarray(_filterbank(sample_rate, n_fft, n_mels))
  # HIGHEST: accelerators would otherwise multiply in bfloat16 and move the dB values.
  mel_BxMxF = jnp.einsum("mk,bfk->bmf", bank_MxK, mag_BxFxK,
                         precision=jax.lax.Precision.HIGHEST)
  return 20.0 * jnp.log10(jnp.maximum(mel_BxMxF, audio.MEL_FLOOR))


def mel_snr_db(mel_BxMxF: Array, mel_hat_BxMxF: Array) -> Array:
  """Per-clip mel SNR in dB, [B]: 10·log10(Σ(M − mean M)² / Σ(M − M̂)²), float32."""
  mel_BxMxF = jnp.asarray(mel_BxMxF, jnp.float32)
  err_BxMxF = mel_BxMxF - jnp.asarray(mel_hat_BxMxF, jnp.float32)
  centred_BxMxF = mel_BxMxF - jnp.mean(mel_BxMxF, axis=(1, 2), keepdims=True)
  signal_B = jnp.sum(jnp.square(centred_BxMxF), axis=(1, 2))
  noise_B = jnp.sum(jnp.square(err_BxMxF), axis=(1, 2))
  tiny = jnp.finfo(jnp.float32).tiny
  return 10.0 * (jnp.log10(jnp.maximum(signal_B, tiny)) - jnp.log10(jnp.maximum(noise_B, tiny)))
