"""Sound events to samples: band-limited oscillators, coloured noise, pulse trains and drums.

`render_event` renders one event (a dict with every key of `synth_scenes.EVENT_KEYS`) alone, and
`mix` adds a clip's events and scales the sum to a peak of at most `PEAK`. Numpy only; an event's
noise comes from the generator passed in, so the same seed renders the same samples.

Shape letters: S samples of a clip, N samples of one event, L samples of one pulse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math

import numpy as np

from almtok.datasets import synth_scenes as scenes

PEAK = 0.95
FADE_DB = 40.0  # Fades run between -FADE_DB and 0 dB.
_MAX_HARMONICS = 64


def mix(events: Sequence[Mapping], seconds: float, sample_rate: int,
        seed: int) -> tuple[np.ndarray, list[dict]]:
  """Renders events into one clip and scales it so that its peak is at most PEAK.

  Returns (wav float32 [S], the events with gain_db lowered by any scaling), so that the returned
  events re-render to the returned clip. Event i draws its noise from default_rng([seed, i]).
  """
  n_total = int(round(seconds * sample_rate))
  acc_S = np.zeros(n_total, np.float64)
  for i, ev in enumerate(events):
    seg_N = render_event(ev, sample_rate, np.random.default_rng([seed, i]))
    s0 = int(round(ev["start_s"] * sample_rate))
    n = max(0, min(seg_N.size, n_total - s0))
    acc_S[s0:s0 + n] += seg_N[:n]
  peak = float(np.max(np.abs(acc_S))) if n_total else 0.0
  # A hair below PEAK so that rounding to float32 cannot push the peak above it.
  scale = min(1.0, PEAK * (1.0 - 1e-6) / peak) if peak > 0 else 1.0
  out = []
  for ev in events:
    ev = dict(ev)
    if scale < 1.0:
      ev["gain_db"] = float(ev["gain_db"] + 20.0 * math.log10(scale))
    out.append(ev)
  return (acc_S * scale).astype(np.float32), out


def render_event(event: Mapping, sample_rate: int = scenes.DEFAULT_SAMPLE_RATE,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """Renders one event alone: float64 [N] covering start_s..end_s, peak 10**(gain_db / 20).

  The samples taper to zero at both ends. `rng` supplies the noise of noise bursts and snares.
  """
  rng = np.random.default_rng(0) if rng is None else rng
  ev = event
  n = int(round(ev["end_s"] * sample_rate)) - int(round(ev["start_s"] * sample_rate))
  if n <= 0:
    return np.zeros(0, np.float64)
  kind, sr = ev["kind"], sample_rate
  t_N = np.arange(n) / sr
  if kind in ("tone", "chord", "noise"):
    if kind == "noise":
      x_N = _colored_noise(ev["color"], n, sr, rng)
    else:
      notes = [ev["f0_hz"]] if kind == "tone" else ev["notes_hz"]
      x_N = sum(_oscillator(2 * np.pi * f * t_N, f, ev["waveform"], sr) for f in notes)
    if ev["envelope"] == "staccato":
      gate = min(0.12, 0.45 * 60.0 / ev["bpm"])
      x_N = x_N * _pulse_train(ev, n, sr, lambda i, length: _note_shape(length, sr), gate)
  elif kind == "chirp":
    f0, f1, dur = ev["f0_hz"], ev["f1_hz"], n / sr
    ratio = f1 / f0
    freq_N = f0 * ratio ** (t_N / dur)
    phase_N = 2 * np.pi * f0 * dur / math.log(ratio) * (ratio ** (t_N / dur) - 1.0)
    x_N = _oscillator(phase_N, freq_N, ev["waveform"], sr)
  elif kind == "arpeggio":
    beat = 60.0 / ev["bpm"]
    gate = min(0.12, 0.45 * beat) if ev["envelope"] == "staccato" else beat
    notes = ev["notes_hz"]

    def note(i: int, length: int) -> np.ndarray:
      f = notes[i % len(notes)]
      t_L = np.arange(length) / sr
      return _oscillator(2 * np.pi * f * t_L, f, ev["waveform"], sr) * _note_shape(length, sr)
    x_N = _pulse_train(ev, n, sr, note, gate)
  elif kind == "clicks":
    x_N = _pulse_train(ev, n, sr, lambda i, length: _click(length, sr), 0.008)
  elif kind == "drums":
    beat = 60.0 / ev["bpm"]

    def hit(i: int, length: int) -> np.ndarray:
      is_kick = ev["drum"] == "kick" or (ev["drum"] == "kick_snare" and i % 2 == 0)
      return _kick(length, sr) if is_kick else _snare(length, sr, rng)
    x_N = _pulse_train(ev, n, sr, hit, min(0.35, 0.85 * beat))
  else:
    raise ValueError(f"unknown event kind {kind!r}")
  # Pulses shape their own attacks, so a pulse on the first sample keeps its full level.
  rise_s = 0.0 if scenes.is_pulsed(ev) else 0.002
  x_N = x_N * _level_envelope(ev, n, sr) * _edge_taper(n, sr, rise_s)
  peak = float(np.max(np.abs(x_N)))
  if peak == 0.0:
    return x_N
  return x_N * (10.0 ** (ev["gain_db"] / 20.0) / peak)



# ----------------------------------------------------------------------------------------------
# Signal pieces.

def _oscillator(phase_N: np.ndarray, freq: float | np.ndarray, waveform: str,
                sample_rate: int) -> np.ndarray:
  """Band-limited waveform by additive synthesis; harmonics fade out between 0.40 and 0.45 fs."""
  if waveform == "sine":
    return np.sin(phase_N)
  top = 0.45 * sample_rate
  k_max = int(min(_MAX_HARMONICS, top / max(float(np.min(freq)), 1.0)))
  out_N = np.zeros_like(phase_N)
  for k in range(1, k_max + 1):
    if waveform == "square" and k % 2 == 0:
      continue
    weight = np.clip((top - k * freq) / (0.05 * sample_rate), 0.0, 1.0) / k
    if waveform == "saw" and k % 2 == 0:
      weight = -weight
    out_N += weight * np.sin(k * phase_N)
  return out_N


def _colored_noise(color: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """Gaussian noise whose power falls as f^-alpha: white 0, pink 1, brown 2 (flat below 20 Hz)."""
  white_N = rng.standard_normal(n)
  if color == "white":
    return white_N
  alpha = {"pink": 1.0, "brown": 2.0}[color]
  freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
  shape = np.maximum(freqs, 20.0) ** (-alpha / 2.0)
  shape[0] = 0.0
  return np.fft.irfft(np.fft.rfft(white_N) * shape, n)


def _ramp(length: int) -> np.ndarray:
  """Raised-cosine rise from exactly 0 towards 1 over `length` samples."""
  return 0.5 - 0.5 * np.cos(np.pi * np.arange(length) / max(length, 1))


def _edge_taper(n: int, sample_rate: int, rise_s: float = 0.002,
                fall_s: float = 0.005) -> np.ndarray:
  env_N = np.ones(n)
  rise, fall = min(n, int(rise_s * sample_rate)), min(n, int(fall_s * sample_rate))
  env_N[:rise] *= _ramp(rise)
  env_N[n - fall:] *= _ramp(fall)[::-1]
  return env_N


def _note_shape(length: int, sample_rate: int) -> np.ndarray:
  """A note or burst: 5 ms attack, flat, 20 ms release (shorter for very short notes)."""
  return _edge_taper(length, sample_rate, min(0.005, 0.2 * length / sample_rate),
                     min(0.02, 0.4 * length / sample_rate))


def _level_envelope(ev: Mapping, n: int, sample_rate: int) -> np.ndarray:
  """Overall loudness curve: fades are linear in dB; continuous sounds get soft edges."""
  u_N = np.arange(n) / max(n - 1, 1)
  if ev["envelope"] == "fade_in":
    env_N = 10.0 ** (FADE_DB * (u_N - 1.0) / 20.0)
  elif ev["envelope"] == "fade_out":
    env_N = 10.0 ** (-FADE_DB * u_N / 20.0)
  else:
    env_N = np.ones(n)
  if not scenes.is_pulsed(ev):
    env_N = env_N * _edge_taper(n, sample_rate, 0.02, 0.05)
  return env_N


def _pulse_train(ev: Mapping, n: int, sample_rate: int,
                 pulse: Callable[[int, int], np.ndarray], pulse_s: float) -> np.ndarray:
  """Adds pulse(i, L) at every onset; each pulse is cut at the event end."""
  out_N = np.zeros(n)
  s0 = int(round(ev["start_s"] * sample_rate))
  length = max(1, int(round(pulse_s * sample_rate)))
  for i, onset in enumerate(ev["onsets_s"]):
    a = int(round(onset * sample_rate)) - s0
    m = min(length, n - a)
    if m > 0:
      p_L = pulse(i, length)[:m]
      out_N[a:a + p_L.size] += p_L
  return out_N


def _click(length: int, sample_rate: int) -> np.ndarray:
  t_L = np.arange(length) / sample_rate
  return np.sin(2 * np.pi * 2500.0 * t_L) * np.exp(-t_L / 0.0015)


def _kick(length: int, sample_rate: int) -> np.ndarray:
  """A pitched thump: a sine gliding from 150 Hz down to 50 Hz, decaying."""
  t_L = np.arange(length) / sample_rate
  tau = 0.04
  phase_L = 2 * np.pi * (50.0 * t_L + 100.0 * tau * (1.0 - np.exp(-t_L / tau)))
  decay_L = np.exp(-t_L / (length / sample_rate / 3.5))
  return np.sin(phase_L) * decay_L * _edge_taper(length, sample_rate, 0.001, 0.01)


def _snare(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """A noise crack (high-passed by differencing) over a short 185 Hz body."""
  length = min(length, int(0.2 * sample_rate))
  t_L = np.arange(length) / sample_rate
  crack_L = np.diff(rng.standard_normal(length + 1)) * np.exp(-t_L / 0.05) / 2.0
  body_L = 0.6 * np.sin(2 * np.pi * 185.0 * t_L) * np.exp(-t_L / 0.03)
  return (crack_L + body_L) * _edge_taper(length, sample_rate, 0.001, 0.01)
