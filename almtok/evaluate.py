r"""Scores a trained run: generates a clip per caption of a split and measures it against the
split's reference clips with almtok's tagger (and one embedding almtok did not train).

  python -m almtok.evaluate --workdir=/tmp/lm --tagger=/tmp/tagger --split=test --out=/tmp/eval
  python -m almtok.evaluate --workdir=/tmp/lm --tagger=/tmp/tagger --num=50 \
      --config.sample.cfg_scale=5 --out=/tmp/eval_cfg5
  python -m almtok.evaluate --workdir=/tmp/lm --tagger=/tmp/tagger --out=/tmp/eval_other \
      --generated_dir=/data/other_system --captions_file=/data/other_system/captions.txt

Generation: every caption of the split (or the first --num), in batches of --batch, each clip as
long as its reference (capped at the model's context), written to <out>/generated/NNNNN.wav. A
rerun keeps the clips already written and generates the rest (batch i always draws from
seed + i, so the clips do not depend on where a run stopped). --generated_dir scores a folder
of WAVs instead (files in name order, one caption per line of --captions_file); WAVs that cannot
be read are skipped and listed.

References: the split's real clips (its TFDS dataset, beside the prepared latents), and the same
clips resynthesised through the run's tokenizer and vocoder. Generated audio is scored against
both; the resynthesis ceiling row scores the resynthesised clips as if they were generated, which
is what the vocoder alone costs.

Metrics (`evaluation/metrics.py`; each names its embedding or classifier; 95% bootstrap
intervals over clips):
  fd_tagger     Fréchet distance of the tagger's embeddings
  fd_inf_tagger the same extrapolated to infinitely many clips (FD against 1/N; 8 or more clips)
  fd_melstats   Fréchet distance of per-band log-mel mean and std (an embedding nobody trained)
  kid_tagger    kernel inception distance of the tagger's embeddings (for sets paired by
                caption, without the pairs' own kernel terms)
  kl_tagger     per clip, KL(reference || generated) of the tagger's posteriors for the same
                caption: the sum over multi-label heads of per-class Bernoulli KLs plus the
                softmax KL of num_events and first_kind; the mean over clips
  kl_tagger_rev the same, KL(generated || reference); both beside their floor (each generated
                clip against every other caption's reference: what hedging alone earns)
  is_tagger     inception score of the `first_kind` head (the earliest event's kind)
  adherence     per clip, the set of (attribute, value) pairs the tagger finds (posterior >= 0.5)
                against the set its caption asks: adherence_{precision,recall,f1}_overall and
                adherence_f1_<attribute>; beside it the ceiling (reference clips) and the floor
                (each generated clip against every other clip's caption), and
                adherence_f1_normalized, (F1 - floor) / (ceiling - floor)
Paired metrics (kl_tagger, adherence) need the split's captions: with --generated_dir they apply
only when the captions file matches the split's.

--embedding=module:function adds fd_<name> and kid_<name> (generated vs real) on an embedding
the user supplies, e.g. VGGish or PANNs with weights on disk (almtok ships none).

Writes <out>/metrics.json, <out>/metrics.md (value, interval, embedding) and
<out>/spectrograms.png (generated beside reference for the first captions), and per-clip scores
(<out>/scores.npz, clips.json) from which --compare=A,B gives every metric of one run minus
another's on the same captions with a paired bootstrap interval (comparison.md):

  python -m almtok.evaluate --compare=/tmp/eval_lm,/tmp/eval_dlm --out=/tmp/lm_vs_dlm

Shape letters: N clips, E embedding width, S samples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
import importlib
from typing import Any

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import numpy as np
import tqdm

from almtok import audio
from almtok import configlib
from almtok import fileio
from almtok import inference
from almtok import plotting
from almtok import state as state_lib
from almtok import tokenizers
from almtok.evaluation import metrics as metrics_lib
from almtok.evaluation import tagger as tagger_lib
from almtok.latents import store as latents_lib

TAGGER_HINT = ("train one with `python -m almtok.evaluation.train_tagger "
               "--config=configs/tagger.py --workdir=DIR` and pass --tagger=DIR")


@dataclasses.dataclass
class Reference:
  """A split's clips: captions, labels (JSON text) and waveforms."""
  ids: list[str]
  captions: list[str]
  labels: list[str]
  wavs: list[np.ndarray]


def reference_clips(workdir: str, split: str, num: int | None, data_dir: str = "") -> Reference:
  """The split's clips from the run's dataset: the TFDS build beside its prepared latents (or
  in `data_dir`); one line if the latents, the dataset or the split are missing or empty."""
  from almtok.datasets import registry  # pylint: disable=g-import-not-at-top  (TensorFlow)
  latents_dir = state_lib.run_latents_dir(workdir)
  stats = latents_lib.read_stats(latents_dir)
  data_dir = data_dir or os.path.join(os.path.dirname(latents_dir), "tfds")
  dataset = ml_collections.ConfigDict(stats.dataset)
  if dataset.name not in registry.NAMES:
    raise configlib.ConfigError(f"{workdir} was trained on {dataset.name!r} data; evaluate reads "
                                f"the TFDS datasets {list(registry.NAMES)}")
  builder = registry.get_builder(dataset, data_dir)
  if not os.path.isdir(builder.data_dir):
    raise configlib.ConfigError(f"no {dataset.name} build in {data_dir} (where its latents were "
                                f"prepared); pass --data_dir")
  sources = builder.as_data_source()
  if split not in sources or not len(sources[split]):
    raise configlib.ConfigError(f"--split={split}: {dataset.name} in {data_dir} has no clips "
                                f"there (splits: {sorted(sources)})")
  source = sources[split]
  n = len(source) if num is None else min(num, len(source))
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  rows = [source[i] for i in range(n)]
  return Reference([text(r["id"]) for r in rows], [text(r["caption"]) for r in rows],
                   [text(r["labels"]) for r in rows],
                   [np.asarray(r["audio"], np.float32) for r in rows])


def generate_clips(generator: inference.Generator, captions: Sequence[str],
                   seconds: Sequence[float], out_dir: str, batch: int, seed: int) -> list[str]:
  """<out_dir>/NNNNN.wav per caption, generating only the batches not all written yet; a folder
  whose clips came from another run, checkpoint or settings is refused in one line."""
  os.makedirs(out_dir, exist_ok=True)
  ckpt_dir = os.path.join(generator.workdir, "checkpoints")
  made_by = json.loads(json.dumps(dict(
      workdir=os.path.abspath(generator.workdir),
      step=max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()),
      settings=dataclasses.asdict(generator.settings), seed=seed, batch=batch)))
  record = os.path.join(out_dir, "made_by.json")
  if os.path.exists(record):
    with open(record, encoding="utf-8") as f:
      before = json.load(f)
    if before != made_by:
      differ = sorted(k for k in made_by if before.get(k) != made_by[k])
      raise configlib.ConfigError(f"{out_dir} holds clips generated with another {differ}; use "
                                  f"another --out, or delete it to start again")
  else:
    fileio.atomic_json(record, made_by, indent=1)
  paths = [os.path.join(out_dir, f"{i:05d}.wav") for i in range(len(captions))]
  batches = range(0, len(captions), batch)
  todo = [b for b in batches if not all(os.path.exists(p) for p in paths[b:b + batch])]
  for b in tqdm.tqdm(todo, desc="generate", unit="batch", disable=None):
    group = slice(b, b + batch)
    length = max(seconds[group])
    wav, _ = generator(list(captions[group]), length, seed + b // batch, progress=False)
    for path, w, s in zip(paths[group], wav, seconds[group]):
      audio.write(path, w[:int(round(s * generator.sample_rate))], generator.sample_rate,
                  strategy="limit")
  return paths


def read_generated(paths: Sequence[str], sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
  """(waveforms, skipped lines): unreadable files are listed, a wrong rate is one error."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  wavs, skipped = [], []
  for path in paths:
    try:
      rate = sf.info(path).samplerate
    except (RuntimeError, OSError) as e:
      skipped.append(f"{path}: {str(e).splitlines()[0]}")
      wavs.append(None)
      continue
    if rate != sample_rate:
      raise configlib.ConfigError(f"{path}: sample rate {rate} Hz, the references are at "
                                  f"{sample_rate} Hz")
    try:
      wavs.append(audio.load(path, sample_rate))
    except audio.AudioError as e:
      skipped.append(f"{path}: {e}")
      wavs.append(None)
  return wavs, skipped


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Scored:
  """What the tagger and the log-mel statistics say about a set of clips."""
  embedding_NxE: np.ndarray
  posteriors: dict[str, np.ndarray]
  melstats_NxE: np.ndarray


def score(model: tagger_lib.Tagger, mels: Sequence[np.ndarray]) -> Scored:
  """The tagger's embeddings and posteriors, and the log-mel statistics, of log-mels [M, F]."""
  frames = max(m.shape[1] for m in mels)
  mel_NxMxF = np.full((len(mels), audio.N_MELS, frames), tagger_lib.FLOOR_DB, np.float32)
  for i, m in enumerate(mels):
    mel_NxMxF[i, :, :m.shape[1]] = m
  frames_N = np.asarray([m.shape[1] for m in mels], np.int32)
  emb, post = tagger_lib.predict(model, mel_NxMxF, frames_N)
  return Scored(emb.astype(np.float64), post, np.stack([metrics_lib.melstats(m) for m in mels]))


def paired_kl(ref: Scored, gen: Scored) -> np.ndarray:
  """Per clip, KL(reference || generated) summed over heads (see the module docstring)."""
  total = 0.0
  for head in tagger_lib.HEADS:
    if head.name == "category":
      continue
    kl = metrics_lib.bernoulli_kl if head.kind == "multi" else metrics_lib.categorical_kl
    total = total + kl(ref.posteriors[head.name], gen.posteriors[head.name])
  return np.asarray(total)


def mismatched_kl(ref: Scored, gen: Scored, reverse: bool = False) -> np.ndarray:
  """Per generated clip i, the mean over every other caption's reference j of KL(reference j ||
  generated i) (with `reverse`, KL(generated i || reference j)), summed over heads as
  `paired_kl`: the KL of a clip that answers another caption, the floor of `kl_tagger`."""
  total_GxR = 0.0
  for head in tagger_lib.HEADS:
    if head.name == "category":
      continue
    g, r = gen.posteriors[head.name], ref.posteriors[head.name]
    multi = head.kind == "multi"
    total_GxR = total_GxR + (metrics_lib.kl_matrix(g, r, bernoulli=multi) if reverse
                             else metrics_lib.kl_matrix(r, g, bernoulli=multi).T)
  n = len(total_GxR)
  return (np.sum(total_GxR, axis=1) - np.diag(total_GxR)) / (n - 1)


def _head_columns() -> dict[str, slice]:
  """Each multi-label head's columns in the attribute sets of `attribute_sets`."""
  heads = [h for h in tagger_lib.HEADS if h.kind == "multi"]
  ends = np.cumsum([len(h.classes) for h in heads])
  return {h.name: slice(int(e) - len(h.classes), int(e)) for h, e in zip(heads, ends)}


def attribute_sets(posteriors: dict[str, np.ndarray], labels: Sequence[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(detected, asked) [N, A], boolean over every (attribute, value) pair of the multi-label
  heads: what the tagger finds in each clip (posterior >= 0.5), and what its caption asks."""
  columns = _head_columns()
  detected = np.concatenate([posteriors[name] >= 0.5 for name in columns], axis=1)
  asked = np.zeros_like(detected)
  for i, text in enumerate(labels):
    for head, value in tagger_lib.attributes(json.loads(text)):
      asked[i, columns[head].start + tagger_lib.HEAD_BY_NAME[head].classes.index(value)] = True
  return detected, asked


def adherence(posteriors: dict[str, np.ndarray], labels: Sequence[str]) -> dict[str, np.ndarray]:
  """Per clip, precision, recall and F1 of the detected pairs against the asked ones over all
  attributes (`precision_overall`, `recall_overall`, `f1_overall`) and per attribute head
  (`f1_<head>`); NaN where a clip's caption asks nothing of it."""
  detected, asked = attribute_sets(posteriors, labels)
  precision, recall, f1 = metrics_lib.set_scores(detected, asked)
  out = {"precision_overall": precision, "recall_overall": recall, "f1_overall": f1}
  for head, columns in _head_columns().items():
    out[f"f1_{head}"] = metrics_lib.set_scores(detected[:, columns], asked[:, columns])[2]
  return out


def adherence_floor(posteriors: dict[str, np.ndarray], labels: Sequence[str]) -> np.ndarray:
  """Per clip, its F1 against every other clip's caption (see `metrics.mismatched_f1`)."""
  return metrics_lib.mismatched_f1(*attribute_sets(posteriors, labels))


def distribution_metrics(gen: Scored, ref: Scored, resamples: int, paired: bool = True
                         ) -> dict[str, Any]:
  """fd_tagger, fd_melstats, kid_tagger and is_tagger of `gen` against `ref`: clips paired by
  caption are resampled together, unpaired sets independently."""
  n, m = gen.embedding_NxE.shape[0], ref.embedding_NxE.shape[0]

  def ci(metric):
    if paired:
      return metrics_lib.bootstrap(lambda i: metric(i, i), n, resamples=resamples)
    return metrics_lib.unpaired_bootstrap(metric, n, m, resamples=resamples)

  out = {
      "fd_tagger": ci(lambda i, j: metrics_lib.frechet_distance(gen.embedding_NxE[i],
                                                                ref.embedding_NxE[j])),
      "fd_melstats": ci(lambda i, j: metrics_lib.frechet_distance(gen.melstats_NxE[i],
                                                                  ref.melstats_NxE[j])),
      "kid_tagger": ci(lambda i, j: metrics_lib.kernel_distance(
          gen.embedding_NxE[i], ref.embedding_NxE[j], paired=paired)),
      "is_tagger": ci(lambda i, j: metrics_lib.inception_score(gen.posteriors["first_kind"][i])),
  }
  if min(n, m) >= 8:   # Enough clips for a fit of FD against 1/N (each value fits 8 sizes).
    out["fd_inf_tagger"] = ci(lambda i, j: metrics_lib.frechet_distance_inf(
        gen.embedding_NxE[i], ref.embedding_NxE[j])[0])
  return out


def normalized_adherence(gen_f1: np.ndarray, real_f1: np.ndarray, floor_f1: np.ndarray,
                         resamples: int) -> metrics_lib.Estimate:
  """adherence F1 above its floor as a fraction of (ceiling - floor), from per-clip F1s of the
  generated clips, the real clips and the floor (`adherence_floor`): 0 for clips that answer
  other captions as well as their own, 1 for clips that answer theirs as the real clips do;
  captions resampled together for the three."""

  def fraction(i):
    floor = np.nanmean(floor_f1[i])
    return float((np.nanmean(gen_f1[i]) - floor) / (np.nanmean(real_f1[i]) - floor))

  return metrics_lib.bootstrap(fraction, len(gen_f1), resamples=resamples)


def _adherence_rows(per_clip: dict[str, np.ndarray], resamples: int) -> dict[str, Any]:
  """adherence_<name>: the mean of each per-clip array over the clips where it is defined."""
  out = {}
  for name, values in per_clip.items():
    kept = values[~np.isnan(values)]
    if kept.size:
      out[f"adherence_{name}"] = metrics_lib.mean_with_ci(kept, resamples=resamples)
  return out


def caption_metrics(gen: Scored, real: Scored, labels: Sequence[str], resamples: int
                    ) -> dict[str, dict[str, Any]]:
  """The metrics that pair each generated clip with its caption's real clip, by row: KL both
  ways and adherence (precision, recall, F1, normalized) of the generated clips, the adherence
  ceiling (the real clips), and the floors of adherence and KL (every other caption)."""
  gen_clip = adherence(gen.posteriors, labels)
  real_clip = adherence(real.posteriors, labels)
  floor_f1 = adherence_floor(gen.posteriors, labels)
  generated = {
      "kl_tagger": metrics_lib.mean_with_ci(paired_kl(real, gen), resamples=resamples),
      "kl_tagger_rev": metrics_lib.mean_with_ci(paired_kl(gen, real), resamples=resamples),
      **_adherence_rows(gen_clip, resamples),
      "adherence_f1_normalized": normalized_adherence(
          gen_clip["f1_overall"], real_clip["f1_overall"], floor_f1, resamples)}
  return {
      "generated vs real": generated,
      "adherence ceiling (real clips)": _adherence_rows(real_clip, resamples),
      "adherence floor (other captions)": _adherence_rows({"f1_overall": floor_f1}, resamples),
      "kl floor (other captions)": {
          name: metrics_lib.mean_with_ci(mismatched_kl(real, gen, reverse), resamples=resamples)
          for name, reverse in (("kl_tagger", False), ("kl_tagger_rev", True))}}


EMBEDDINGS = {"fd_tagger": "almtok tagger embedding (not VGGish)",
              "fd_melstats": "per-band log-mel mean and std",
              "fd_inf_tagger": "almtok tagger embedding, FD extrapolated to 1/N = 0",
              "kid_tagger": "almtok tagger embedding, cubic kernel",
              "is_tagger": "almtok tagger first_kind head",
              "kl_tagger": "almtok tagger posteriors, paired by caption",
              "kl_tagger_rev": "almtok tagger posteriors, paired by caption"}


def markdown(results: dict[str, Any]) -> str:
  lines = [f"# {results['workdir']}: {results['split']} split, {results['clips']} clips", "",
           f"Tagger: {results['tagger']}. 95% bootstrap intervals over clips "
           f"({results['resamples']} resamples).", "",
           "| metric | row | value | 95% CI | embedding / classifier |", "|---|---|---:|---|---|"]
  for row, values in results["rows"].items():
    for name, est in values.items():
      what = results["embeddings"].get(
          name, "almtok tagger posteriors" if name.startswith("adherence") else "")
      lines.append(f"| {name} | {row} | {est['value']:.4g} | [{est['low']:.4g}, "
                   f"{est['high']:.4g}] | {what} |")
  if results.get("skipped"):
    lines += ["", f"Skipped ({len(results['skipped'])}):"] + [f"- {s}" for s in results["skipped"]]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Per-clip scores, and comparing two runs on the same captions.
# ---------------------------------------------------------------------------------------------

SCORES_FILE, CLIPS_FILE = "scores.npz", "clips.json"


def save_scores(out: str, gen: Scored, real: Scored, captions: Sequence[str],
                labels: Sequence[str], tagger_sha256: str | None) -> None:
  """What `compare` needs of a scored run: per-clip arrays (npz, no pickle) and captions."""
  arrays = {}
  for prefix, scored in (("gen", gen), ("real", real)):
    arrays[f"{prefix}_embedding"] = scored.embedding_NxE
    arrays[f"{prefix}_melstats"] = scored.melstats_NxE
    arrays.update({f"{prefix}_post_{k}": v for k, v in scored.posteriors.items()})
  with fileio.atomic_path(os.path.join(out, SCORES_FILE)) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  fileio.atomic_json(os.path.join(out, CLIPS_FILE), dict(
      captions=list(captions), labels=list(labels), tagger_sha256=tagger_sha256), indent=1)


def load_scores(out: str) -> tuple[Scored, Scored, dict[str, Any]]:
  paths = [os.path.join(out, n) for n in (SCORES_FILE, CLIPS_FILE)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise configlib.ConfigError(f"{out}: no {os.path.basename(missing[0])} (evaluate a run with "
                                f"--out={out} first; --generated_dir runs are not paired)")
  with np.load(paths[0], allow_pickle=False) as f:
    arrays = dict(f)
  with open(paths[1], encoding="utf-8") as f:
    clips = json.load(f)

  def scored(prefix):
    post = {k[len(prefix) + 6:]: v for k, v in arrays.items() if k.startswith(f"{prefix}_post_")}
    return Scored(arrays[f"{prefix}_embedding"], post, arrays[f"{prefix}_melstats"])

  return scored("gen"), scored("real"), clips


def compare(out_a: str, out_b: str, resamples: int = 1000) -> dict[str, Any]:
  """Every metric of run A minus run B on the same captions, with a paired bootstrap interval
  (the same captions resampled for both runs): an interval that excludes 0 says they differ."""
  gen_a, real_a, clips_a = load_scores(out_a)
  gen_b, real_b, clips_b = load_scores(out_b)
  if clips_a["captions"] != clips_b["captions"]:
    raise configlib.ConfigError(f"{out_a} and {out_b} scored different captions "
                                f"({len(clips_a['captions'])} and {len(clips_b['captions'])}): "
                                "evaluate both on the same split and --num")
  if clips_a.get("tagger_sha256") != clips_b.get("tagger_sha256"):
    raise configlib.ConfigError(f"{out_a} and {out_b} were scored by different taggers: "
                                "evaluate both with the same --tagger")
  n = len(clips_a["captions"])
  # Per-clip values, computed once per run and indexed by each resample.
  per_clip = {id(g): dict(kl=paired_kl(r, g), kl_rev=paired_kl(g, r),
                          adherence=adherence(g.posteriors, clips_a["labels"])["f1_overall"])
              for g, r in ((gen_a, real_a), (gen_b, real_b))}
  metrics = {
      "fd_tagger": lambda g, r, i: metrics_lib.frechet_distance(g.embedding_NxE[i],
                                                                r.embedding_NxE[i]),
      "fd_melstats": lambda g, r, i: metrics_lib.frechet_distance(g.melstats_NxE[i],
                                                                  r.melstats_NxE[i]),
      "kid_tagger": lambda g, r, i: metrics_lib.kernel_distance(g.embedding_NxE[i],
                                                                r.embedding_NxE[i], paired=True),
      "is_tagger": lambda g, r, i: metrics_lib.inception_score(g.posteriors["first_kind"][i]),
      "kl_tagger": lambda g, r, i: float(np.mean(per_clip[id(g)]["kl"][i])),
      "kl_tagger_rev": lambda g, r, i: float(np.mean(per_clip[id(g)]["kl_rev"][i])),
      "adherence_f1_overall": lambda g, r, i: float(
          np.nanmean(per_clip[id(g)]["adherence"][i])),
  }
  rows = {}
  for name, metric in metrics.items():
    diff = metrics_lib.paired_bootstrap(lambda i, m=metric: m(gen_a, real_a, i),
                                        lambda i, m=metric: m(gen_b, real_b, i), n,
                                        resamples=resamples)
    every = np.arange(n)
    rows[name] = dict(a=metric(gen_a, real_a, every), b=metric(gen_b, real_b, every),
                      difference=diff.to_json(), differ=not diff.low <= 0.0 <= diff.high)
  return dict(a=out_a, b=out_b, clips=n, resamples=resamples, rows=rows)


def comparison_markdown(result: dict[str, Any]) -> str:
  lines = [f"# A = {result['a']}, B = {result['b']}: {result['clips']} captions", "",
           f"Paired bootstrap over captions ({result['resamples']} resamples), 95% intervals.",
           "", "| metric | A | B | A - B | 95% CI | differ |", "|---|---:|---:|---:|---|---|"]
  for name, row in result["rows"].items():
    d = row["difference"]
    lines.append(f"| {name} | {row['a']:.4g} | {row['b']:.4g} | {d['value']:.4g} | "
                 f"[{d['low']:.4g}, {d['high']:.4g}] | {'yes' if row['differ'] else 'no'} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The whole job.
# ---------------------------------------------------------------------------------------------


def load_embedding(spec: str) -> Callable[[Sequence[np.ndarray], int], np.ndarray]:
  """The function that `module:function` names: (mono float32 waveforms, sample rate) ->
  embeddings [N, E]. The hook for users who have a pretrained audio model's weights on disk
  (VGGish, PANNs, ...): almtok ships none. One line if it cannot be imported."""
  module, _, name = spec.partition(":")
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError, ValueError) as e:
    raise configlib.ConfigError(f"--embedding={spec}: {e} (want module:function)") from None


def run(*, workdir: str, tagger: str, out: str, split: str = "test", num: int | None = None,
        batch: int = 16, seed: int = 0, sample_overrides: dict[str, Any] | None = None,
        generated_dir: str | None = None, captions_file: str | None = None,
        data_dir: str = "", resamples: int = 1000, embedding: str | None = None,
        embedding_name: str = "external") -> dict[str, Any]:
  """The command line's work; returns what goes into metrics.json."""
  # --- Checks, before any work ------------------------------------------------------------------
  if not out:
    raise configlib.ConfigError("--out is required")
  if num is not None and num < 2:
    raise configlib.ConfigError(f"--num={num}: at least 2 clips are needed")
  if not tagger:
    raise configlib.ConfigError(f"--tagger is empty: {TAGGER_HINT}")
  try:
    tagger_model, tagger_meta = tagger_lib.load(tagger)
  except FileNotFoundError:
    raise configlib.ConfigError(f"--tagger={tagger}: no tagger there; {TAGGER_HINT}") from None
  embed = load_embedding(embedding) if embedding else None
  run_config = state_lib.load_run_config(workdir)
  generator = None
  if generated_dir is None:
    settings = inference.run_settings(run_config, sample_overrides, workdir)
    generator = inference.Generator(workdir, settings)
  elif not captions_file or not os.path.exists(captions_file):
    raise configlib.ConfigError(f"--captions_file={captions_file}: --generated_dir needs the "
                                f"captions of its WAVs, one per line")
  ref = reference_clips(workdir, split, num, data_dir)
  rate = audio.SAMPLE_RATE
  run_rate = state_lib.run_stats(workdir).sample_rate
  if run_rate != rate:
    raise configlib.ConfigError(f"{workdir}: its tokenizer works at {run_rate} Hz, the tagger "
                                f"at {rate} Hz")
  t0 = time.perf_counter()

  # --- Generated clips --------------------------------------------------------------------------
  skipped: list[str] = []
  if generator is not None:
    seconds = [min(w.size / rate, run_config["model"]["max_len"] / generator.tokenizer.frame_rate)
               for w in ref.wavs]
    paths = generate_clips(generator, ref.captions, seconds, os.path.join(out, "generated"),
                           batch, seed)
    captions = ref.captions
    paired = True
  else:
    with open(captions_file, encoding="utf-8") as f:
      captions = [l.strip() for l in f if l.strip()]
    paths = sorted(os.path.join(generated_dir, n) for n in os.listdir(generated_dir)
                   if n.lower().endswith(".wav"))
    if len(paths) != len(captions):
      raise configlib.ConfigError(f"--generated_dir={generated_dir}: {len(paths)} WAVs, "
                                  f"--captions_file has {len(captions)} captions")
    paired = captions == ref.captions[:len(captions)]
  generate_s = time.perf_counter() - t0
  wavs, skipped = read_generated(paths, rate)
  keep = [i for i, w in enumerate(wavs) if w is not None]
  if len(keep) < 2:
    raise configlib.ConfigError(f"fewer than 2 readable generated clips ({len(skipped)} skipped)")

  # --- Scores -----------------------------------------------------------------------------------
  t1 = time.perf_counter()
  stats = state_lib.run_stats(workdir)
  tok = tokenizers.from_stats(stats)
  real_wavs = [ref.wavs[i] for i in keep] if paired else ref.wavs
  # The references through the run's tokenizer and vocoder, once per --out and clip count.
  os.makedirs(out, exist_ok=True)
  resynth_mels = tagger_lib.resynthesise(
      real_wavs, tok, os.path.join(out, "reference_resynth.npz"),
      json.dumps(dataclasses.asdict(stats.tokenizer), sort_keys=True))
  gen = score(tagger_model, [audio.log_mel(wavs[i]) for i in keep])
  real = score(tagger_model, [audio.log_mel(w) for w in real_wavs])
  resynth = score(tagger_model, resynth_mels)
  labels = [ref.labels[i] for i in keep] if paired else ref.labels
  rows = {"generated vs real": distribution_metrics(gen, real, resamples, paired),
          "generated vs resynthesised": distribution_metrics(gen, resynth, resamples, paired),
          "resynthesis ceiling (resynthesised vs real)": distribution_metrics(resynth, real,
                                                                              resamples)}
  if paired:   # KL pairs clips by caption; adherence needs the split's labels.
    for row, values in caption_metrics(gen, real, labels, resamples).items():
      rows.setdefault(row, {}).update(values)
    rows["generated vs resynthesised"].update(
        kl_tagger=metrics_lib.mean_with_ci(paired_kl(resynth, gen), resamples=resamples),
        kl_tagger_rev=metrics_lib.mean_with_ci(paired_kl(gen, resynth), resamples=resamples))
  if embed is not None:   # A user's embedding, named by them: FD and KID against real clips.
    e_gen = np.asarray(embed([wavs[i] for i in keep], rate), np.float64)
    e_real = np.asarray(embed(real_wavs, rate), np.float64)
    external = Scored(e_gen, gen.posteriors, gen.melstats_NxE)
    reference = Scored(e_real, real.posteriors, real.melstats_NxE)
    found = distribution_metrics(external, reference, resamples, paired)
    rows["generated vs real"].update({f"fd_{embedding_name}": found["fd_tagger"],
                                      f"kid_{embedding_name}": found["kid_tagger"]})
  rows = {k: {m: e.to_json() for m, e in v.items()} for k, v in rows.items() if v}
  metrics_s = time.perf_counter() - t1

  # --- Outputs ----------------------------------------------------------------------------------
  named = dict(EMBEDDINGS)
  if embed is not None:
    named[f"fd_{embedding_name}"] = named[f"kid_{embedding_name}"] = (
        f"{embedding_name} (--embedding={embedding})")
  results = dict(workdir=workdir, split=split, clips=len(keep), embeddings=named,
                 tagger=tagger, tagger_steps=tagger_meta.get("trained_steps"),
                 resamples=resamples, paired=paired, rows=rows, skipped=skipped,
                 generate_seconds=generate_s, metrics_seconds=metrics_s,
                 settings=None if generator is None else dataclasses.asdict(generator.settings))
  os.makedirs(out, exist_ok=True)
  fileio.atomic_json(os.path.join(out, "metrics.json"), results, indent=1)
  if paired:
    save_scores(out, gen, real, [captions[i] for i in keep], labels,
                tagger_meta.get("weights_sha256"))
  with fileio.atomic_write(os.path.join(out, "metrics.md"), encoding="utf-8") as f:
    f.write(markdown(results))
  show = keep[:4]
  panels, titles = [], []
  for j, i in enumerate(show):
    panels += [wavs[i], real_wavs[j] if paired else ref.wavs[j]]
    titles += [f"generated: {captions[i]}", "reference"]
  plotting.spectrogram_grid(os.path.join(out, "spectrograms.png"), panels, titles, rate)
  return results


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
  flags.DEFINE_string("tagger", None, "Directory of an exported tagger (train_tagger).")
  flags.DEFINE_string("out", None, "Output directory (generated clips, metrics).")
  flags.DEFINE_string("split", "test", "Split of the run's dataset.")
  flags.DEFINE_integer("num", None, "Only the first N captions.")
  flags.DEFINE_integer("batch", 16, "Captions generated together.")
  flags.DEFINE_integer("seed", 0, "Seed of the first batch (batch i uses seed + i).")
  flags.DEFINE_integer("resamples", 1000, "Bootstrap resamples.")
  flags.DEFINE_string("generated_dir", None, "Score the WAVs in this folder instead.")
  flags.DEFINE_string("captions_file", None, "Captions of --generated_dir, one per line.")
  flags.DEFINE_string("data_dir", "", "The run's TFDS data (default: beside its latents).")
  flags.DEFINE_string("embedding", None, "module:function mapping (waveforms, sample rate) to "
                      "embeddings [N, E], e.g. a VGGish or PANNs model whose weights you have "
                      "on disk: adds fd_<name> and kid_<name>.")
  flags.DEFINE_string("embedding_name", "external", "The <name> of --embedding's metrics.")
  flags.DEFINE_list("compare", None, "Two --out folders of earlier evaluations (A,B) of the "
                    "same captions: writes A - B per metric with paired intervals to --out.")
  config_flags.DEFINE_config_dict("config", inference.sample_flag_defaults(),
                                  "--config.sample.KEY=VALUE changes one sampling setting of "
                                  "the run's config.sample.")


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  if f.compare:
    if len(f.compare) != 2 or not f.out:
      raise configlib.ConfigError("--compare takes two evaluation folders A,B, and --out")
    result = compare(*f.compare, resamples=f.resamples)
    os.makedirs(f.out, exist_ok=True)
    fileio.atomic_json(os.path.join(f.out, "comparison.json"), result, indent=1)
    with fileio.atomic_write(os.path.join(f.out, "comparison.md"), encoding="utf-8") as out:
      out.write(comparison_markdown(result))
    print(comparison_markdown(result))
    return
  overrides = {k: v for k, v in f.config.sample.items() if f"config.sample.{k}" in f}
  results = run(workdir=f.workdir, tagger=f.tagger, out=f.out, split=f.split, num=f.num,
                batch=f.batch, seed=f.seed, sample_overrides=overrides,
                generated_dir=f.generated_dir, captions_file=f.captions_file,
                data_dir=f.data_dir, resamples=f.resamples, embedding=f.embedding,
                embedding_name=f.embedding_name)
  print(markdown(results))
  print(f"generation {results['generate_seconds']:.1f} s, metrics "
        f"{results['metrics_seconds']:.1f} s; {os.path.join(f.out, 'metrics.md')}")


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
