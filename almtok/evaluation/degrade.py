"""Controlled degradations of real clips, the rungs of the judge's ladders (`ladder.py`).

Each ladder turns clean waveforms into worse ones by one knob, from a faint change to a gross
one; a metric that a ladder should move must rank its rungs in that order. Every function takes
mono float32 waveforms at `audio.SAMPLE_RATE` and a `seed`, and returns waveforms of the same
lengths; the same (clips, rung, seed) always gives the same output.

  noise         white noise at an SNR (dB) against each clip's own mean power
  lowpass       8th-order Butterworth low-pass at a cut-off (Hz), run forwards and backwards
  griffin_lim   the clip's log-mel back to audio by Griffin-Lim with this many iterations
  shuffle       the clip cut into this many equal segments, put back in a random order
  swap          (captions, not audio) this fraction of clips paired with another clip's caption

Shape letters: S samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

import numpy as np

from almtok import audio


def noise(wavs: Sequence[np.ndarray], snr_db: float, seed: int) -> list[np.ndarray]:
  out = []
  for i, w in enumerate(wavs):
    rng = np.random.default_rng([seed, i])
    power = max(float(np.mean(np.square(w, dtype=np.float64))), 1e-12)
    hiss = rng.standard_normal(w.size) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    out.append((w + hiss).astype(np.float32))
  return out


def lowpass(wavs: Sequence[np.ndarray], cutoff_hz: float, seed: int) -> list[np.ndarray]:
  del seed  # Deterministic.
  from scipy import signal  # pylint: disable=g-import-not-at-top
  sos = signal.butter(8, cutoff_hz, btype="low", fs=audio.SAMPLE_RATE, output="sos")
  return [signal.sosfiltfilt(sos, w).astype(np.float32) for w in wavs]


def griffin_lim(wavs: Sequence[np.ndarray], iterations: float, seed: int) -> list[np.ndarray]:
  from almtok.tokenizers import vocoder  # pylint: disable=g-import-not-at-top
  gl = vocoder.GriffinLim(n_iter=int(iterations), seed=seed)
  out = []
  for w in wavs:
    frames = w.size // audio.HOP_LENGTH
    back = gl.mel_to_wav(audio.log_mel(w)[None, :, :frames])[0]
    clip = np.zeros_like(w)
    clip[:min(back.size, w.size)] = back[:w.size]
    out.append(clip)
  return out


def shuffle(wavs: Sequence[np.ndarray], segments: float, seed: int) -> list[np.ndarray]:
  """Each clip's `segments` equal parts in a random order that moves every part (a derangement
  by rotation of a random permutation), so that no rung leaves a clip as it was."""
  out = []
  for i, w in enumerate(wavs):
    rng = np.random.default_rng([seed, i])
    parts = np.array_split(w, int(segments))
    order = rng.permutation(len(parts))
    moved = np.roll(order, 1)   # Part order[k] goes where order[k - 1] was: none stays.
    placed = [None] * len(parts)
    for src, dst in zip(order, moved):
      placed[dst] = parts[src]
    # Parts of unequal length (array_split) keep the clip's length in total.
    out.append(np.concatenate(placed).astype(np.float32))
  return out


def swap_captions(n: int, fraction: float, seed: int) -> np.ndarray:
  """Which caption each of n clips is scored against [n]: the first round(fraction · n) clips
  of a random order take each other's captions in a cycle (none keeps its own), the rest keep
  theirs."""
  rng = np.random.default_rng(seed)
  chosen = rng.permutation(n)[:int(round(fraction * n))]
  index = np.arange(n)
  if chosen.size >= 2:
    index[chosen] = np.roll(chosen, 1)
  return index


@dataclasses.dataclass(frozen=True)
class Ladder:
  """One knob: its name, unit, rung values from faint to gross, and what it does."""
  name: str
  unit: str
  rungs: tuple[float, ...]
  apply: Callable[[Sequence[np.ndarray], float, int], list[np.ndarray]] | None
  # None: the audio stays clean and the rung is the fraction of captions swapped.


LADDERS = (
    Ladder("noise", "SNR dB", (40.0, 30.0, 20.0, 10.0, 0.0), noise),
    Ladder("lowpass", "cut-off Hz", (6000.0, 4000.0, 2000.0, 1000.0, 500.0), lowpass),
    Ladder("griffin_lim", "iterations", (32.0, 16.0, 8.0, 4.0, 1.0), griffin_lim),
    Ladder("shuffle", "segments", (2.0, 4.0, 8.0, 16.0, 32.0), shuffle),
    Ladder("swap", "fraction of captions", (0.2, 0.4, 0.6, 0.8, 1.0), None),
)
BY_NAME = {l.name: l for l in LADDERS}
