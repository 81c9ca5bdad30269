r"""Trains almtok's audio tagger (`evaluation/tagger.py`) and exports it for the metrics.

  python -m almtok.evaluation.train_tagger --config=configs/tagger.py --workdir=runs/tagger
  python -m almtok.evaluation.train_tagger --config=configs/tagger.py:tiny --workdir=/tmp/tagger

Builds synth_sounds (and debian_sounds, unless its name is empty) into `data_dir`, holds every
clip's log-mel in memory, and resynthesises `resynth.train` train and `resynth.test` test clips
once through the tokenizer and its vocoder (Griffin-Lim for `mel`), cached in <workdir>/resynth/
(they are what generated audio looks like to the tagger). Each training clip is, at random:
shifted in time (up to `augment.shift_s`, circularly), changed in gain (up to +-`gain_db`), and
with probability `mix_prob` mixed with another clip (power sum of the two log-mels; the mix keeps
the union of their multi-label targets and no single-label target).

The loop is `loop.fit` (a time budget beside the step budget, checkpoints in
<workdir>/checkpoints that a rerun resumes from, TensorBoard scalars). At the end it scores the
test split (`report`: per-head F1 and accuracy on original and resynthesised synth clips, debian
accuracy, confusion matrices as PNG in <workdir>/report/) and writes
<workdir>/tagger.safetensors + tagger.json (`load`).

Shape letters: B batch, M mel bins, F frames, N clips.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
from flax import nnx
from safetensors import numpy as st_numpy

from almtok import audio
from almtok import checkpoint
from almtok import configlib
from almtok import fileio
from almtok import plotting
from almtok import tokenizers
from almtok.evaluation import loop
from almtok.evaluation import tagger as tagger_lib



# ---------------------------------------------------------------------------------------------
# Clips in memory.
# ---------------------------------------------------------------------------------------------


class Clips:
  """Log-mels padded to one length [N, M, F] with their real frame counts, targets, labels and
  captions."""

  def __init__(self, mels: Sequence[np.ndarray], labels: Sequence[str], captions: Sequence[str],
               frames: int):
    n = len(mels)
    self.mel_NxMxF = np.full((n, audio.N_MELS, frames), tagger_lib.FLOOR_DB, np.float32)
    self.frames_N = np.zeros(n, np.int32)
    for i, m in enumerate(mels):
      t = min(m.shape[1], frames)
      self.mel_NxMxF[i, :, :t] = m[:, :t]
      self.frames_N[i] = t
    self.targets = [tagger_lib.targets(l) for l in labels]
    self.labels = list(labels)
    self.captions = list(captions)

  def __len__(self) -> int:
    return len(self.frames_N)

  @classmethod
  def concat(cls, parts: Sequence[Clips]) -> Clips:
    out = cls.__new__(cls)
    out.mel_NxMxF = np.concatenate([p.mel_NxMxF for p in parts])
    out.frames_N = np.concatenate([p.frames_N for p in parts])
    out.targets = [t for p in parts for t in p.targets]
    out.labels = [l for p in parts for l in p.labels]
    out.captions = [c for p in parts for c in p.captions]
    return out


def _source_clips(source: Any) -> tuple[list[np.ndarray], list[str], list[str]]:
  """(waveforms, labels, captions) of every clip of a TFDS data source."""
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  rows = [source[i] for i in range(len(source))]
  return ([np.asarray(r["audio"], np.float32) for r in rows], [text(r["labels"]) for r in rows],
          [text(r["caption"]) for r in rows])


def load_data(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Clips]:
  """{"train", "test_synth", "test_resynth", "test_debian"?}: every clip's log-mel and targets."""
  # Imports TensorFlow, so only here.
  from almtok.datasets import registry  # pylint: disable=g-import-not-at-top
  data_dir = config.data_dir or os.path.join(workdir, "tfds")
  frames = int(round(config.synth.seconds * audio.SAMPLE_RATE / audio.HOP_LENGTH)) + 1
  synth = registry.build(config.synth, data_dir).as_data_source()
  train_wavs, train_labels, train_captions = _source_clips(synth["train"])
  test_wavs, test_labels, test_captions = _source_clips(synth["test"])
  mel = lambda wavs: [audio.log_mel(w) for w in wavs]
  cache = os.path.join(workdir, "resynth")
  os.makedirs(cache, exist_ok=True)
  name = config.resynth.tokenizer
  tok = tokenizers.get(name)
  parts = [Clips(mel(train_wavs), train_labels, train_captions, frames)]
  k = config.resynth.train
  if k:
    resynth = tagger_lib.resynthesise(train_wavs[:k], tok,
                                      os.path.join(cache, f"{name}_train.npz"), name)
    parts.append(Clips(resynth, train_labels[:k], train_captions[:k], frames))
  data = {"test_synth": Clips(mel(test_wavs), test_labels, test_captions, frames)}
  k = config.resynth.test
  if k:
    data["test_resynth"] = Clips(
        tagger_lib.resynthesise(test_wavs[:k], tok, os.path.join(cache, f"{name}_test.npz"),
                                name),
        test_labels[:k], test_captions[:k], frames)
  if config.debian.name:
    debian = registry.build(config.debian, data_dir).as_data_source()
    wavs, labels, captions = _source_clips(debian["train"])
    parts.append(Clips(mel(wavs), labels, captions, frames))
    wavs, labels, captions = _source_clips(debian["test"])
    data["test_debian"] = Clips(mel(wavs), labels, captions, frames)
  data["train"] = Clips.concat(parts)
  return data


def augment(mel_MxF: np.ndarray, frames: int, rng: np.random.Generator, gain_db: float,
            shift_frames: int) -> np.ndarray:
  """A copy of a padded log-mel whose first `frames` frames are changed in gain (up to
  +-`gain_db`) and shifted circularly in time (up to `shift_frames`)."""
  m = mel_MxF.copy()
  m[:, :frames] += rng.uniform(-gain_db, gain_db)   # The padding stays at the floor.
  shift = int(rng.integers(0, min(shift_frames, frames - 1) + 1)) if frames > 1 else 0
  m[:, :frames] = np.roll(m[:, :frames], shift, axis=1)
  return np.maximum(m, tagger_lib.FLOOR_DB)


def sample_batch(clips: Clips, step: int, *, seed: int, batch_size: int, gain_db: float,
                 shift_frames: int, mix_prob: float) -> dict[str, np.ndarray]:
  """The training batch of `step`, a pure function of (seed, step), augmented."""
  rng = np.random.default_rng([seed, step])
  mels, frames, targets = [], [], []

  def one(i):
    t = int(clips.frames_N[i])
    return augment(clips.mel_NxMxF[i], t, rng, gain_db, shift_frames), t

  for _ in range(batch_size):
    i = int(rng.integers(len(clips)))
    m, t = one(i)
    target = dict(clips.targets[i])
    if rng.random() < mix_prob:
      j = int(rng.integers(len(clips)))
      m2, t2 = one(j)
      m = 10.0 * np.log10(10.0 ** (m / 10.0) + 10.0 ** (m2 / 10.0))
      t = max(t, t2)
      other = clips.targets[j]
      target = {h.name: np.maximum(target[h.name], other[h.name]) for h in tagger_lib.HEADS
                if h.kind == "multi" and h.name in target and h.name in other}
    mels.append(m.astype(np.float32))
    frames.append(t)
    targets.append(target)
  return dict(mel=np.stack(mels), frames=np.asarray(frames, np.int32),
              **tagger_lib.stack_targets(targets))


# ---------------------------------------------------------------------------------------------
# Model, update and scoring.
# ---------------------------------------------------------------------------------------------


def make_model(config: ml_collections.ConfigDict, seed: int = 0) -> tagger_lib.Tagger:
  m = config.model
  return tagger_lib.Tagger(tuple(m.channels), m.embed_dim, m.num_groups, m.width, m.floor_db,
                           rngs=nnx.Rngs(seed))


def tagger_loss(model: tagger_lib.Tagger, batch: dict[str, jax.Array]
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  targets = {k: v for k, v in batch.items() if k not in ("mel", "frames")}
  return tagger_lib.loss_fn(model, batch["mel"], batch["frames"], targets)


def f1_scores(p_NxK: np.ndarray, y_NxK: np.ndarray) -> np.ndarray:
  """Per-class F1 of thresholded (0.5) multi-label posteriors; 1 for a class absent in both."""
  pred, true = p_NxK >= 0.5, y_NxK >= 0.5
  tp = np.sum(pred & true, 0)
  denom = np.sum(pred, 0) + np.sum(true, 0)
  return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)


def report(model: tagger_lib.Tagger, data: dict[str, Clips], out_dir: str | None = None
           ) -> dict[str, Any]:
  """Scores on every test set: macro-F1 per multi-label head, accuracy per single-label head,
  register accuracy on single-event clips that have a register; confusion matrices as PNG."""
  results = {}
  for name, clips in data.items():
    if not name.startswith("test"):
      continue
    _, post = tagger_lib.predict(model, clips.mel_NxMxF, clips.frames_N)
    batch = tagger_lib.stack_targets(clips.targets)
    scores = {"clips": len(clips)}
    for head in tagger_lib.HEADS:
      mask = batch[f"{head.name}_mask"] > 0
      if not mask.any():
        continue
      p, y = post[head.name][mask], batch[head.name][mask]
      if head.kind == "multi":
        f1 = f1_scores(p, y)
        scores[f"{head.name}_macro_f1"] = float(np.mean(f1))
        scores[f"{head.name}_f1"] = dict(zip(head.classes, map(float, f1)))
      else:
        pred = np.argmax(p, -1)
        scores[f"{head.name}_accuracy"] = float(np.mean(pred == y))
        if out_dir:
          confusion = np.zeros((len(head.classes),) * 2, np.int64)
          np.add.at(confusion, (y, pred), 1)
          plotting.confusion_png(os.path.join(out_dir, f"{name}_{head.name}.png"), confusion,
                                 head.classes, f"{name}: {head.name}")
    if "registers" in post:
      single = [i for i, t in enumerate(clips.targets)
                if "num_events" in t and int(t["num_events"]) == 0 and t["registers"].any()]
      if single:
        pred = np.argmax(post["registers"][single], -1)
        true = np.argmax(np.stack([clips.targets[i]["registers"] for i in single]), -1)
        scores["register_accuracy_single_event"] = float(np.mean(pred == true))
        scores["register_single_event_clips"] = len(single)
    results[name] = scores
  return results


# ---------------------------------------------------------------------------------------------
# Export and loading.
# ---------------------------------------------------------------------------------------------


def export(model: tagger_lib.Tagger, config: ml_collections.ConfigDict, directory: str,
           extra: dict[str, Any]) -> str:
  """<directory>/tagger.safetensors + tagger.json (the JSON names the weights by hash)."""
  weights = st_numpy.save(checkpoint.flat_params(model), metadata={"format": tagger_lib.FORMAT})
  meta = dict(format=tagger_lib.FORMAT, model=config.model.to_dict(),
              heads={h.name: dict(kind=h.kind, classes=list(h.classes))
                     for h in tagger_lib.HEADS}, **extra)
  path, _ = fileio.write_export(directory, tagger_lib.EXPORT_STEM, weights, meta, indent=1)
  return path


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def check_clips_config(config: ml_collections.ConfigDict) -> None:
  """The checks of what `load_data` and `loop.fit` read (shared with the contrastive model)."""
  configlib.validate(config, choices={"synth.name": ("synth_sounds",),
                                      "debian.name": ("", "debian_sounds"),
                                      "resynth.tokenizer": tuple(tokenizers.NAMES)})
  if not config.train.max_minutes > 0:
    raise configlib.ConfigError(f"config.train.max_minutes={config.train.max_minutes}: must "
                                "be > 0")


def check_config(config: ml_collections.ConfigDict) -> None:
  check_clips_config(config)
  if not 0 <= config.augment.mix_prob <= 1:
    raise configlib.ConfigError(f"config.augment.mix_prob={config.augment.mix_prob}: must be "
                                "in [0, 1]")


def train_and_export(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir`), scores the test sets, exports; returns the summary."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  data = load_data(config, workdir)
  logging.info("clips: %s", {k: len(v) for k, v in data.items()})
  tests = {k: v for k, v in data.items() if k != "train"}
  shift = int(config.augment.shift_s * audio.SAMPLE_RATE / audio.HOP_LENGTH)
  batch_at = functools.partial(
      sample_batch, data["train"], seed=config.seed, batch_size=config.train.batch_size,
      gain_db=config.augment.gain_db, shift_frames=shift, mix_prob=config.augment.mix_prob)
  final, step, train_seconds = loop.fit(
      make_model(config, config.seed), tagger_loss, batch_at, config, workdir,
      evaluate=lambda model: report(model, tests))
  out_dir = os.path.join(workdir, "report")
  os.makedirs(out_dir, exist_ok=True)
  scores = report(final, tests, out_dir)
  summary = dict(step=step, train_seconds=train_seconds, train_clips=len(data["train"]),
                 scores=scores)
  # The embedding's per-dimension mean and std over the training clips as they are (no
  # augmentation): the metrics z-score embeddings with them before FD and KID.
  emb, _ = tagger_lib.predict(final, data["train"].mel_NxMxF, data["train"].frames_N)
  normalization = dict(embedding_mean=emb.mean(0).tolist(),
                       embedding_std=np.maximum(emb.std(0), 1e-6).tolist())
  summary["weights"] = export(final, config, workdir, dict(
      trained_steps=step, seed=config.seed, train_seconds=train_seconds, scores=scores,
      **normalization))
  fileio.atomic_json(os.path.join(workdir, "report", "scores.json"), summary, indent=1)
  return summary


if __name__ == "__main__":
  loop.command(train_and_export, check_config, "tagger")
