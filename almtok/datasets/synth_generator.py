"""Synthetic captioned sounds: almtok's built-in dataset, which needs no download.

Each clip holds one to three sound events (tones, chords, arpeggios, chirps, coloured noise,
clicks and drum hits) that play one after another or on top of each other. A clip has a caption
in plain English and structured labels that say exactly what was rendered, so that an evaluator
can check generated audio against its caption (kind, register, direction, tempo and timing).

Everything here is numpy and depends only on the integer seed: the same seed gives bit-identical
audio, caption and labels. Splits use disjoint ranges of seeds.

The clip's pieces live in three modules: `synth_scenes` (what sounds when: events, attributes,
timing, and the labels that record them), `synth_render` (the samples) and `synth_captions` (the
words). This one ties them to seeds and splits.

Shape letters: S samples of a clip.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from typing import Any

import numpy as np

from almtok.datasets import synth_captions as captions
from almtok.datasets import synth_render as render
from almtok.datasets import synth_scenes as scenes

# "reference": the seeds no dataset split uses, from which the judge draws real clips as many
# as it needs (noise floors at any size; `evaluation/reference.py`).
_SPLIT_OFFSETS = {"train": 0, "validation": 1 << 40, "test": 2 << 40, "reference": 3 << 40}
_SPLIT_SPAN = 1 << 40

VOCABULARY: dict[str, Any] = {
    "kinds": list(scenes.KINDS),
    "waveforms": list(scenes.WAVEFORMS),
    "registers": {k: list(v) for k, v in scenes.REGISTERS.items()},
    "directions": list(scenes.DIRECTIONS),
    "colors": list(scenes.COLORS),
    "qualities": list(scenes.QUALITIES),
    "drums": list(scenes.DRUMS),
    "tempos": {k: list(v) for k, v in scenes.TEMPOS.items()},
    "envelopes": list(scenes.ENVELOPES),
    "envelopes_of": {k: list(v) for k, v in scenes.ENVELOPES_OF.items()},
    "relations": list(scenes.RELATIONS),
    "chirp_low_hz": list(scenes.CHIRP_LOW_HZ),
    "chirp_high_hz": list(scenes.CHIRP_HIGH_HZ),
    "event_keys": list(scenes.EVENT_KEYS),
    "pause_s": scenes.PAUSE_S,
    "cues": captions.CUES,
}


@dataclasses.dataclass(frozen=True)
class Clip:
  """One rendered clip: float32 mono samples, a caption and the labels it was rendered from."""
  wav: np.ndarray
  caption: str
  labels: dict
  seed: int


# ----------------------------------------------------------------------------------------------
# Seeds and splits.

def split_seeds(split: str, size: int, base_seed: int = 0) -> list[int]:
  """The seeds of a split: `size` consecutive seeds from a range no other split can reach."""
  if split not in _SPLIT_OFFSETS:
    raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_OFFSETS)}")
  if size < 0 or base_seed < 0 or base_seed + size > _SPLIT_SPAN:
    raise ValueError(f"need 0 <= base_seed and base_seed + size <= 2**40, got {base_seed=}, "
                     f"{size=}")
  start = _SPLIT_OFFSETS[split] + base_seed
  return list(range(start, start + size))


def generate(split: str, size: int, seconds: float = scenes.DEFAULT_SECONDS,
             sample_rate: int = scenes.DEFAULT_SAMPLE_RATE, base_seed: int = 0) -> Iterator[Clip]:
  """Yields the clips of a split, in seed order."""
  for seed in split_seeds(split, size, base_seed):
    yield render_clip(seed, seconds, sample_rate)


def render_clip(seed: int, seconds: float = scenes.DEFAULT_SECONDS,
                sample_rate: int = scenes.DEFAULT_SAMPLE_RATE) -> Clip:
  """Renders the clip of `seed`: float32 [S] with S = round(seconds * sample_rate)."""
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}")
  if seconds < scenes.MIN_SECONDS:
    raise ValueError(f"clips must last at least {scenes.MIN_SECONDS} s, got {seconds}")
  rng = np.random.default_rng(seed)
  events, relation = scenes.sample_layout(rng, float(seconds))
  wav_S, events = render.mix(events, seconds, sample_rate, seed)
  labels = scenes.clip_labels(events, relation, seconds, sample_rate)
  return Clip(wav=wav_S, caption=captions.describe(labels, rng), labels=labels, seed=int(seed))
