r"""Trains almtok's contrastive text-audio model (`evaluation/clap.py`) and exports it.

  python -m almtok.evaluation.train_clap --config=configs/clap.py --workdir=runs/clap
  python -m almtok.evaluation.train_clap --config=configs/clap.py:tiny --workdir=/tmp/clap

The clips are the tagger's (`train_tagger.load_data`: synth_sounds, debian_sounds, resynthesised
clips, every log-mel in memory); every distinct caption's MiniLM token states are computed once.
A batch draws `batch_size` different clips, each changed in gain and shifted in time as the
tagger's are (no mixing: a mix has no caption). The loop is `loop.fit`.

At the end it scores each test set (`report`): the cosine of each clip with its own caption
against its mean cosine with the set's other captions (the floor), the gap with a 95% bootstrap
interval over clips, and caption retrieval R@1 and R@10 among the set's distinct captions beside
chance (k / captions); then writes <workdir>/clap.safetensors + clap.json (`clap.load`) and
<workdir>/report/scores.json.

Shape letters: B batch, N clips, U distinct captions, L text tokens, E text width, P joint-space
width.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from almtok import audio
from almtok import configlib
from almtok import fileio
from almtok.evaluation import clap as clap_lib
from almtok.evaluation import loop
from almtok.evaluation import metrics as metrics_lib
from almtok.evaluation import train_tagger


class Texts:
  """Every distinct caption of the clips, its index, and its token states."""

  def __init__(self, captions: list[str], states: clap_lib.CaptionStates):
    self.captions = sorted(set(captions))
    self.index = {c: i for i, c in enumerate(self.captions)}
    self.tokens_UxLxE, self.mask_UxL = states(self.captions)


def sample_batch(clips: train_tagger.Clips, ids_N: np.ndarray, texts: Texts, step: int, *,
                 seed: int, batch_size: int, gain_db: float, shift_frames: int
                 ) -> dict[str, np.ndarray]:
  """The training batch of `step`, a pure function of (seed, step): different clips, augmented,
  with their captions' token states and caption ids."""
  rng = np.random.default_rng([seed, step])
  rows = rng.choice(len(clips), size=batch_size, replace=False)
  mel = np.stack([train_tagger.augment(clips.mel_NxMxF[i], int(clips.frames_N[i]), rng,
                                       gain_db, shift_frames) for i in rows])
  ids = ids_N[rows]
  return dict(mel=mel.astype(np.float32), frames=clips.frames_N[rows],
              text=texts.tokens_UxLxE[ids].astype(np.float32), text_mask=texts.mask_UxL[ids],
              caption_id=ids.astype(np.int32))


def report(model: clap_lib.Clap, data: dict[str, train_tagger.Clips], texts: Texts,
           resamples: int = 1000) -> dict[str, Any]:
  """Per test set: own-caption cosine, its floor (mean over the set's other captions), the gap
  with its interval, R@1 and R@10 with chance."""
  results = {}
  for name, clips in data.items():
    captions = sorted(set(clips.captions))
    own_N = np.asarray([captions.index(c) for c in clips.captions])
    rows = np.asarray([texts.index[c] for c in captions])
    audio_NxP = clap_lib.embed_mels(model, [m[:, :t] for m, t in zip(clips.mel_NxMxF,
                                                                      clips.frames_N)])
    text_UxP = clap_lib.embed_states(model, texts.tokens_UxLxE[rows], texts.mask_UxL[rows])
    cosine_NxU = audio_NxP @ text_UxP.T
    n, u = cosine_NxU.shape
    own = cosine_NxU[np.arange(n), own_N]
    other = (cosine_NxU.sum(1) - own) / max(u - 1, 1)
    rank_N = clap_lib.ranks(cosine_NxU)[np.arange(n), own_N]
    gap = metrics_lib.mean_with_ci(own - other, resamples=resamples)
    results[name] = dict(
        clips=n, captions=u, score=float(own.mean()), floor=float(other.mean()),
        gap=gap.to_json(), r1=float(np.mean(rank_N < 1)), r10=float(np.mean(rank_N < 10)),
        r1_chance=min(1, u) / u, r10_chance=min(10, u) / u)
  return results


def check_config(config: ml_collections.ConfigDict) -> None:
  train_tagger.check_clips_config(config)
  if config.train.batch_size < 2:
    raise configlib.ConfigError(f"config.train.batch_size={config.train.batch_size}: a "
                                "contrastive batch needs at least 2 clips")


def train_and_export(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir`), scores the test sets, exports; returns the summary."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  data = train_tagger.load_data(config, workdir)
  train = data.pop("train")
  if config.train.batch_size > len(train):
    raise configlib.ConfigError(f"config.train.batch_size={config.train.batch_size}: more "
                                f"than the {len(train)} training clips")
  logging.info("clips: %s", {k: len(v) for k, v in data.items()} | {"train": len(train)})
  texts = Texts(train.captions + [c for d in data.values() for c in d.captions],
                clap_lib.CaptionStates(config.text.max_len))
  ids_N = np.asarray([texts.index[c] for c in train.captions])
  shift = int(config.augment.shift_s * audio.SAMPLE_RATE / audio.HOP_LENGTH)
  batch_at = functools.partial(sample_batch, train, ids_N, texts, seed=config.seed,
                               batch_size=config.train.batch_size,
                               gain_db=config.augment.gain_db, shift_frames=shift)
  final, step, train_seconds = loop.fit(
      clap_lib.make(config.model, config.seed), clap_lib.loss_fn, batch_at, config, workdir,
      evaluate=lambda model: {k: {m: v for m, v in s.items() if m in ("r1", "r10", "score")}
                              for k, s in report(model, data, texts, resamples=10).items()})
  scores = report(final, data, texts)
  summary = dict(step=step, train_seconds=train_seconds, train_clips=len(train),
                 distinct_captions=len(texts.captions), scores=scores)
  summary["weights"] = clap_lib.export(final, workdir, dict(
      model=config.model.to_dict(), text_max_len=config.text.max_len,
      text_encoder="MiniLM-L6 (all-MiniLM-L6-v2), frozen", trained_steps=step, seed=config.seed,
      train_seconds=train_seconds, scores=scores))
  os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
  fileio.atomic_json(os.path.join(workdir, "report", "scores.json"), summary, indent=1)
  return summary


if __name__ == "__main__":
  loop.command(train_and_export, check_config, "contrastive model")
