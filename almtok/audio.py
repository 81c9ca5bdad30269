"""Audio I/O and features: loading, writing, log-mel, and level measurements.

Everything returns float32 numpy arrays. `write` never changes a level silently: it applies one
stated gain (`strategy`), warns when samples clip, and returns a `WriteReport` of the levels
written. Shape letters: S samples, M mel bins, F frames.
Every failure to read usable audio raises an `AudioError` whose message names the file and
the reason, so that data preparation can skip the file and record why.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Literal

from absl import logging
import numpy as np
import soundfile as sf

from almtok import fileio

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


WRITE_STRATEGIES = ("clip", "limit", "peak", "loudness")
PEAK_DB = -1.0       # Default peak for strategy "peak", the ceiling for "limit" and "loudness".
LOUDNESS_DB = -20.0  # Default RMS level for strategy "loudness", in dBFS.


@dataclasses.dataclass(frozen=True)
class WriteReport:
  """What `write` did to the levels. `dataclasses.asdict` gives a JSON-serialisable dict.

  `peak` and `rms` measure the samples written (after the gain, and after clipping for 16-bit
  files) in full-scale units: 1.0 is 0 dBFS. `clipped` is the fraction of samples that the gain
  left beyond full scale: clipped to it in a 16-bit file, kept in a float file (where any later
  conversion or playback clips them).
  """
  path: str
  strategy: str
  gain: float
  gain_db: float
  peak: float
  rms: float
  clipped: float


def write(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE,
          subtype: Literal["PCM_16", "FLOAT"] = "PCM_16", *,
          strategy: Literal["clip", "limit", "peak", "loudness"] = "clip",
          peak_db: float = PEAK_DB, loudness_db: float = LOUDNESS_DB) -> WriteReport:
  """Writes a mono (S) or multichannel (SxK) WAV file atomically and reports its levels.

  `strategy` chooses the one gain applied to the whole file:
    "clip": gain 1, so levels stay what the model produced. Samples beyond full scale are
      clipped to it in 16-bit files and kept in float files.
    "limit": gain 1 unless the peak is above `peak_db`; then the gain that puts it there (the
      level is the model's wherever it fits, and nothing clips).
    "peak": the peak goes to `peak_db` dBFS (default -1).
    "loudness": the RMS level goes to `loudness_db` dBFS (default -20), except that the gain is
      lowered where needed to keep the peak at or below `peak_db`, so nothing clips.
  Digital silence gets gain 1 under every strategy. Whenever samples end up beyond full scale,
  one absl warning names the file and the fraction. The file appears whole or not at all
  (`fileio.atomic_path`).

  Raises:
    AudioError: `wav` holds non-finite samples.
    ValueError: unknown `subtype` or `strategy`.
  """
  wav = np.asarray(wav, np.float32)
  if not np.all(np.isfinite(wav)):
    raise AudioError(path, "refusing to write non-finite samples")
  if subtype not in ("PCM_16", "FLOAT"):
    raise ValueError(f"subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}")
  if strategy not in WRITE_STRATEGIES:
    raise ValueError(f"strategy must be one of {WRITE_STRATEGIES}, got {strategy!r}")
  gain = _gain(wav, strategy, peak_db, loudness_db)
  # In float64, so that which samples count as clipped does not hang on float32 rounding.
  scaled = wav.astype(np.float64) * gain
  over = levels(scaled)
  if over["clipped"] > 0:
    logging.warning("%s: %.1f%% of samples %s (peak %+.1f dBFS); write with strategy='peak' "
                    "or 'loudness' to avoid it", os.fspath(path), 100 * over["clipped"],
                    "clipped at full scale" if subtype == "PCM_16" else
                    "beyond full scale (kept in this float file; playback clips them)",
                    over["peak_db"])
  if subtype == "PCM_16":
    scaled = np.clip(scaled, -1.0, 1.0)
  out = scaled.astype(np.float32)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with fileio.atomic_path(path) as tmp:
    sf.write(tmp, out, sample_rate, subtype=subtype, format="WAV")
  return WriteReport(path=os.fspath(path), strategy=strategy, gain=float(gain),
                     gain_db=float(20.0 * np.log10(gain)), peak=peak(out), rms=_rms(out),
                     clipped=over["clipped"])


def _gain(wav: np.ndarray, strategy: str, peak_db: float, loudness_db: float) -> float:
  top, rms = peak(wav), _rms(wav)
  if strategy == "clip" or top == 0.0:
    return 1.0
  ceiling = 10.0 ** (peak_db / 20.0)
  if strategy == "peak":
    return ceiling / top
  if strategy == "limit":
    return min(1.0, ceiling / top)
  return min(10.0 ** (loudness_db / 20.0) / rms, ceiling / top)


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


def to_db(level: float) -> float:
  """A full-scale level (1.0 = 0 dBFS) in dBFS; -inf for 0."""
  return float(20.0 * np.log10(level)) if level > 0 else float("-inf")


def rms_db(wav: np.ndarray) -> float:
  """Root-mean-square level in dB relative to full scale (-inf dB for digital silence)."""
  return to_db(_rms(wav))


def _rms(wav: np.ndarray) -> float:
  wav = np.asarray(wav, np.float64)
  return float(np.sqrt(np.mean(np.square(wav)))) if wav.size else 0.0


def levels(wav: np.ndarray) -> dict[str, float]:
  """Levels to print beside a clip: peak (full-scale units), peak_db and rms_db (dBFS, -inf
  for digital silence) and clipped (fraction of samples beyond full scale, |x| > 1)."""
  wav = np.asarray(wav)
  top = peak(wav)
  return {"peak": top, "peak_db": to_db(top),
          "rms_db": rms_db(wav),
          "clipped": float(np.mean(np.abs(wav) > 1.0)) if wav.size else 0.0}


def format_levels(wav: np.ndarray) -> str:
  """`levels` as one line, e.g. "peak -1.0 dBFS, rms -18.3 dBFS, 0.0% clipped"."""
  lv = levels(wav)
  return (f"peak {lv['peak_db']:+.1f} dBFS, rms {lv['rms_db']:+.1f} dBFS, "
          f"{100 * lv['clipped']:.1f}% clipped")


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                   n_mels: int = N_MELS) -> np.ndarray:
  """Slaney-normalized mel filterbank, shape M x (n_fft // 2 + 1), float32."""
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
  # The log in float64: in float32, 20·log10(float32(1e-5)) rounds to -100.00001, below the floor.
  return (20.0 * np.log10(np.maximum(mel_MxF.astype(np.float64), MEL_FLOOR))).astype(np.float32)


def _first_line(e: BaseException) -> str:
  return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
