"""Real clips as many as the judge needs: synth_sounds rendered from seeds that no dataset split
uses (`synth_generator.split_seeds("reference", n)`), with the tagger's scores cached on disk.

The set metrics compare N clips with N reference clips and put beside them N other real clips
against the same reference (the noise floor at that N), so a run of N generated clips needs 2N
reference clips: `pool(...).take(range(N))` is the reference, the next N the floor's real clips.
synth_sounds is procedural, so the pool can be as large as asked; its clips differ from every
train, validation and test clip.

The cache (one .npz per pool size and tagger) is keyed by the clips' settings, the tagger's
weights and floor, and the first clips' samples themselves, so a change to the generator or the
tagger recomputes it rather than reuse stale scores.

Shape letters: N clips.
"""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
import json
import os
from typing import Any

import numpy as np
import tqdm

from almtok import audio
from almtok import fileio
from almtok.datasets import synth_generator
from almtok.evaluation import judge
from almtok.evaluation import tagger as tagger_lib

_CHECKED_CLIPS = 4   # Clips whose samples go into the cache key.


def default_cache_dir() -> str:
  return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                      "almtok", "reference")


def render(n: int, seconds: float, split: str = "reference"
           ) -> tuple[list[np.ndarray], list[str], list[str]]:
  """Waveforms, labels (JSON) and captions of the first n clips of `split`'s seeds (as its
  TFDS build holds them, for a dataset split)."""
  seeds = synth_generator.split_seeds(split, n)
  clips = [synth_generator.render_clip(s, seconds, audio.SAMPLE_RATE)
           for s in tqdm.tqdm(seeds, desc=f"{split} clips", unit="clip", disable=None)]
  return ([c.wav for c in clips], [json.dumps(c.labels, sort_keys=True) for c in clips],
          [c.caption for c in clips])


def _key(n: int, seconds: float, meta: Mapping[str, Any]) -> str:
  digest = hashlib.sha256(json.dumps(dict(
      n=n, seconds=seconds, rate=audio.SAMPLE_RATE, tagger=meta.get("weights_sha256"),
      model=meta.get("model"), mean=meta.get("embedding_mean")), sort_keys=True).encode())
  for w in render(min(n, _CHECKED_CLIPS), seconds)[0]:
    digest.update(w.tobytes())
  return digest.hexdigest()


def pool(model: tagger_lib.Tagger, meta: Mapping[str, Any], n: int, seconds: float,
         cache_dir: str | None = None) -> judge.Scored:
  """The tagger's scores of the first n reference clips of `seconds`, from the cache or computed
  (and cached) now."""
  cache_dir = cache_dir or default_cache_dir()
  key = _key(n, seconds, meta)
  path = os.path.join(cache_dir, f"reference-{n}-{key[:16]}.npz")
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      if str(f["key"]) == key:
        return judge.Scored.from_arrays(dict(f), "pool")
  scored = judge.score_wavs(model, meta, render(n, seconds)[0])
  os.makedirs(cache_dir, exist_ok=True)
  with fileio.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, key=np.asarray(key), **scored.to_arrays("pool"))
  return scored
