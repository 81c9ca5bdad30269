"""Weight-free verifiers of a caption's attributes, the second judge: signal processing on the
waveform, sharing nothing with the tagger but the clips it is checked on.

Each verifier reads one attribute of a clip that holds one event (it does not separate
events), over the clip's active frames (within 40 dB of its loudest):

  register   the lowest strong spectral peak (the fundamental of a tone, the root of a chord
             or arpeggio): low below 250 Hz, mid below 1 kHz, high above
  direction  the sign of the median change of the dominant frequency between frames where it
             moves (a chirp's sweep; an arpeggio's steps, most of which go its way); steady
             when it moves less than twice
  color      the slope of the long-term power spectrum against frequency, log-log, 100 Hz to
             6 kHz: white about 0, pink -1, brown -2 (split at -0.5 and -1.5)
  tempo      the beat period from the autocorrelation of the onset strength (positive level
             changes), within 60-220 bpm: slow below 95 bpm, medium below 140, fast above
  envelope   the level's trend over the event (a least-squares line through the frames' upper
             envelope, dB): fade_in above +10 dB, fade_out below -10 dB; for a tone, chord or
             noise, staccato when the sound stops between pulses (a third of its span silent);
             sustained otherwise

`measure(wav)` gives what the verifiers read (`codes` as integers, for the judge's scores) and
`read` a caption attribute's value from it; `VERIFIERS` names the caption attributes checked.
experiments/evaluation/verifiers.md gives each one's accuracy on real one-event test clips; the
judge uses those that reach 0.85 (`ACCURATE`).

Shape letters: S samples, F frames, K frequency bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from almtok import audio
from almtok.datasets import synth_scenes

VERIFIERS = ("register", "direction", "color", "tempo", "envelope")
# The verifiers whose accuracy on real single-event test clips reached 0.85
# (experiments/evaluation/verifiers.md); the judge's DSP adherence reads these alone.
ACCURATE = ("register", "direction", "color", "tempo", "envelope")

_N_FFT, _HOP = 2048, 160
_STACCATO_KINDS = ("tone", "chord", "noise")   # The kinds whose staccato is a gated sound.
_ACTIVE_DB = 40.0   # Frames within this much of the loudest are active.


def _stft_power(wav_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(power [F, K] of Hann-windowed frames, bin frequencies [K])."""
  wav_S = np.asarray(wav_S, np.float64)
  pad = np.pad(wav_S, (_N_FFT // 2, _N_FFT // 2))
  n = 1 + (pad.size - _N_FFT) // _HOP
  idx = np.arange(_N_FFT)[None, :] + _HOP * np.arange(max(n, 1))[:, None]
  frames = pad[np.minimum(idx, pad.size - 1)] * np.hanning(_N_FFT)[None, :]
  return np.abs(np.fft.rfft(frames, axis=-1)) ** 2, np.fft.rfftfreq(_N_FFT, 1 / audio.SAMPLE_RATE)


def _levels_db(wav_S: np.ndarray, window: int = 400) -> np.ndarray:
  """Frame levels in dB [F]: mean power over 25 ms windows every hop (short, so that the gaps
  between pulses show)."""
  power = np.convolve(np.square(np.asarray(wav_S, np.float64)), np.ones(window) / window, "same")
  return 10.0 * np.log10(power[::_HOP] + 1e-12)


def register(power_FxK: np.ndarray, freqs_K: np.ndarray, active_F: np.ndarray) -> str:
  spectrum = power_FxK[active_F].mean(0)
  band = (freqs_K >= 60.0) & (freqs_K <= 6000.0)
  strong = band & (spectrum >= 0.1 * spectrum[band].max())
  # The lowest bin of the lowest strong peak: a local maximum among the strong bins.
  peaks = np.flatnonzero(strong[1:-1] & (spectrum[1:-1] >= spectrum[:-2])
                         & (spectrum[1:-1] >= spectrum[2:])) + 1
  f0 = freqs_K[peaks[0]] if peaks.size else freqs_K[band][np.argmax(spectrum[band])]
  bounds = [hi for _, hi in synth_scenes.REGISTERS.values()]
  return list(synth_scenes.REGISTERS)[int(np.searchsorted(bounds[:-1], f0))]


def direction(power_FxK: np.ndarray, freqs_K: np.ndarray, active_F: np.ndarray) -> str:
  band = (freqs_K >= 60.0) & (freqs_K <= 7000.0)
  dominant = np.log2(freqs_K[band][np.argmax(power_FxK[active_F][:, band], axis=-1)])
  steps = np.diff(dominant)
  moving = steps[np.abs(steps) > 1e-6]
  if moving.size < 2:   # A pitch that never moves (an arpeggio moves at each note).
    return "steady"
  return "rising" if np.median(moving) > 0 else "falling"


def color(power_FxK: np.ndarray, freqs_K: np.ndarray, active_F: np.ndarray) -> str:
  band = (freqs_K >= 100.0) & (freqs_K <= 6000.0)
  spectrum = power_FxK[active_F].mean(0)[band]
  slope = np.polyfit(np.log10(freqs_K[band]), np.log10(spectrum + 1e-20), 1)[0]
  return "white" if slope > -0.5 else "pink" if slope > -1.5 else "brown"


def _onset_strength(levels_F: np.ndarray) -> np.ndarray:
  return np.maximum(np.diff(levels_F, prepend=levels_F[:1]), 0.0)


def tempo(levels_F: np.ndarray) -> str:
  onset = _onset_strength(np.maximum(levels_F, levels_F.max() - _ACTIVE_DB))
  onset = onset - onset.mean()
  frame_rate = audio.SAMPLE_RATE / _HOP
  lags = np.arange(int(frame_rate * 60 / 220), int(frame_rate * 60 / 60) + 1)
  lags = lags[lags < onset.size - 1]
  corr = np.asarray([np.dot(onset[:-l], onset[l:]) / (onset.size - l) for l in lags])
  if not lags.size or corr.max() <= 0:   # No periodic onsets: nothing to read.
    return "medium"
  # The shortest lag close to the best: a beat, not a bar.
  best = lags[np.flatnonzero(corr >= 0.8 * corr.max())[0]]
  bpm = 60.0 * frame_rate / best
  return "slow" if bpm < 95 else "medium" if bpm < 140 else "fast"


def _span(levels_F: np.ndarray) -> np.ndarray:
  active = np.flatnonzero(levels_F >= levels_F.max() - _ACTIVE_DB)
  return levels_F[active[0]:active[-1] + 1]


def gappy(levels_F: np.ndarray) -> bool:
  """Whether a third of the sound's span, first to last active frame, is silent."""
  return bool(np.mean(_span(levels_F) < levels_F.max() - _ACTIVE_DB) > 1 / 3)


def trend(levels_F: np.ndarray) -> str:
  """fade_in, fade_out or sustained, from the level's trend over the sound's span."""
  span = _span(levels_F)
  # The upper envelope: the loudest frame within 0.25 s, so pulses' gaps do not count.
  width = int(0.25 * audio.SAMPLE_RATE / _HOP)
  upper = np.asarray([span[max(0, i - width):i + width + 1].max() for i in range(span.size)])
  t = np.arange(span.size)
  change = np.polyfit(t, upper, 1)[0] * max(span.size - 1, 1) if span.size > 1 else 0.0
  return "fade_in" if change > 10.0 else "fade_out" if change < -10.0 else "sustained"


# What `codes` stores per clip, and the values of each (the attribute's classes; 0/1 for gaps).
CODES = (("register", tuple(synth_scenes.REGISTERS)),
         ("direction", synth_scenes.DIRECTIONS + ("steady",)),
         ("color", synth_scenes.COLORS), ("tempo", tuple(synth_scenes.TEMPOS)),
         ("trend", ("fade_in", "fade_out", "sustained")), ("gappy", (False, True)))


def measure(wav_S: np.ndarray) -> dict[str, Any]:
  """What the verifiers read from a one-event clip: each attribute of CODES."""
  power_FxK, freqs_K = _stft_power(wav_S)
  levels_F = _levels_db(wav_S)
  frame_db = 10.0 * np.log10(power_FxK.sum(-1) + 1e-12)
  active_F = frame_db >= frame_db.max() - _ACTIVE_DB
  return dict(register=register(power_FxK, freqs_K, active_F),
              direction=direction(power_FxK, freqs_K, active_F),
              color=color(power_FxK, freqs_K, active_F),
              tempo=tempo(levels_F), trend=trend(levels_F), gappy=gappy(levels_F))


def read(measured: Mapping[str, Any], attribute: str, kind: str) -> str:
  """The value of a caption attribute that a clip measured as `measured` has, for a caption
  whose event is a `kind` (which tells staccato from a gated pulse train)."""
  if attribute == "envelope":
    return "staccato" if kind in _STACCATO_KINDS and measured["gappy"] else measured["trend"]
  return measured[attribute]


def codes(wavs) -> np.ndarray:
  """[N, len(CODES)] int: each clip's measured values as indices into CODES."""
  out = np.zeros((len(wavs), len(CODES)), np.int32)
  for i, w in enumerate(wavs):
    m = measure(w)
    out[i] = [values.index(m[name]) for name, values in CODES]
  return out


def decode(codes_V: np.ndarray) -> dict[str, Any]:
  return {name: values[int(c)] for (name, values), c in zip(CODES, codes_V)}


def asked(labels: Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
  """(kind, the attributes a one-event caption asks that the verifiers read); (None, {}) for
  a caption of more events."""
  events = labels.get("events", [])
  if len(events) != 1:
    return None, {}
  event = events[0]
  return event["kind"], {k: str(event[k]) for k in VERIFIERS if event.get(k) is not None}
