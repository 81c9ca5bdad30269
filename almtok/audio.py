"""Audio I/O and features: loading, writing, log-mel, and simple measurements.

Everything returns float32 numpy arrays. Shape letters: S samples, M mel bins, F frames.
Every failure to read usable audio raises an `AudioError` whose message names the file and
the reason, so that data preparation can skip the file and record why.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
N_MELS = 64
HOP_LENGTH = 160   # 10 ms at 16 kHz: 100 mel frames per second.
N_FFT = 1024
WIN_LENGTH = 400   # 25 ms window.
MEL_FLOOR = 1e-5   # Amplitude floor before the log: -100 dB.


class AudioError(ValueError):
  """A file (or array) that does not hold usable audio."""

  def __init__(self, source: str | os.PathLike, reason: str):
    self.source = str(source)
    self.reason = reason
    super().__init__(f"{self.source}: {reason}")


def load(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Reads any file soundfile can decode as mono float32 at `sample_rate`.

  Multichannel audio is averaged to mono; other rates are resampled (polyphase, scipy).

  Raises:
    AudioError: the file is missing, unreadable, empty, has no channels, or holds
      non-finite samples.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(path, "no such file")
  try:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise AudioError(path, f"unreadable ({_first_line(e)})") from e
  return _to_mono_at_rate(data, rate, sample_rate, path)


def to_mono_at_rate(wav: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE,
                    source: str = "<array>") -> np.ndarray:
  """Validates an in-memory signal (S or SxChannels) and returns mono float32 at `sample_rate`."""
  wav = np.asarray(wav, np.float32)
  if wav.ndim == 1:
    wav = wav[:, None]
  if wav.ndim != 2:
    raise AudioError(source, f"expected 1 or 2 dimensions, got shape {wav.shape}")
  return _to_mono_at_rate(wav, rate, sample_rate, source)


def _to_mono_at_rate(data_SxK: np.ndarray, rate: int, sample_rate: int, source: str) -> np.ndarray:
  if data_SxK.shape[1] == 0:
    raise AudioError(source, "zero channels")
  if data_SxK.shape[0] == 0:
    raise AudioError(source, "empty (0 samples)")
  if not np.all(np.isfinite(data_SxK)):
    raise AudioError(source, "non-finite samples (NaN or Inf)")
  wav = data_SxK.mean(axis=1, dtype=np.float32)
  if rate != sample_rate:
    wav = resample(wav, rate, sample_rate)
  return np.ascontiguousarray(wav, np.float32)


def resample(wav_S: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
  """Polyphase resampling by the exact rational ratio target_rate / rate."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  if rate <= 0 or target_rate <= 0:
    raise ValueError(f"sample rates must be positive, got {rate} -> {target_rate}")
  if rate == target_rate:
    return np.asarray(wav_S, np.float32)
  g = math.gcd(rate, target_rate)
  return signal.resample_poly(wav_S, target_rate // g, rate // g).astype(np.float32)


def write(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE,
          subtype: Literal["PCM_16", "FLOAT"] = "PCM_16") -> None:
  """Writes a mono (S) or multichannel (SxK) WAV file, 16-bit PCM or 32-bit float.

  16-bit output is clipped to [-1, 1]; float output is written as is.
  """
  wav = np.asarray(wav, np.float32)
  if not np.all(np.isfinite(wav)):
    raise AudioError(path, "refusing to write non-finite samples")
  if subtype == "PCM_16":
    wav = np.clip(wav, -1.0, 1.0)
  elif subtype != "FLOAT":
    raise ValueError(f"subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sf.write(os.fspath(path), wav, sample_rate, subtype=subtype, format="WAV")


def duration(path: str | os.PathLike) -> float:
  """Length of an audio file in seconds, read from its header."""
  try:
    info = sf.info(os.fspath(path))
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise AudioError(path, f"unreadable ({_first_line(e)})") from e
  return info.frames / info.samplerate


def peak(wav: np.ndarray) -> float:
  """Largest absolute sample value (0 for an empty array)."""
  wav = np.asarray(wav)
  return float(np.max(np.abs(wav))) if wav.size else 0.0


def rms_db(wav: np.ndarray) -> float:
  """Root-mean-square level in dB relative to full scale (-inf dB for digital silence)."""
  wav = np.asarray(wav, np.float64)
  rms = np.sqrt(np.mean(np.square(wav))) if wav.size else 0.0
  return float(20.0 * np.log10(rms)) if rms > 0 else float("-inf")


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                   n_mels: int = N_MELS) -> np.ndarray:
  """Slaney-normalised mel filterbank, shape M x (n_fft // 2 + 1), float32."""
  import librosa  # pylint: disable=g-import-not-at-top
  return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0,
                             fmax=sample_rate / 2).astype(np.float32)


def log_mel(wav_S: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
            hop_length: int = HOP_LENGTH, n_fft: int = N_FFT,
            win_length: int = WIN_LENGTH) -> np.ndarray:
  """Log-mel magnitude spectrogram in dB, shape M x F with F = 1 + S // hop_length.

  dB of the mel-filtered STFT magnitude, floored at 20·log10(MEL_FLOOR) = -100 dB. Frames are
  centred (reflect padding), so frame f covers samples around f · hop_length.
  """
  from scipy import signal  # pylint: disable=g-import-not-at-top
  wav_S = np.asarray(wav_S, np.float32)
  if wav_S.ndim != 1 or wav_S.size == 0:
    raise AudioError("<array>", f"log_mel expects a non-empty 1-D signal, got {wav_S.shape}")
  pad = n_fft // 2
  padded = np.pad(wav_S, pad, mode="reflect" if wav_S.size > pad else "constant")
  window = signal.get_window("hann", win_length, fftbins=True).astype(np.float32)
  window = np.pad(window, ((n_fft - win_length) // 2, (n_fft - win_length + 1) // 2))
  n_frames = 1 + wav_S.size // hop_length
  idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
  frames_FxN = padded[idx] * window[None, :]
  mag_FxK = np.abs(np.fft.rfft(frames_FxN, axis=-1)).astype(np.float32)
  mel_MxF = mel_filterbank(sample_rate, n_fft, n_mels) @ mag_FxK.T
  return (20.0 * np.log10(np.maximum(mel_MxF, MEL_FLOOR))).astype(np.float32)


def _first_line(e: BaseException) -> str:
  return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
