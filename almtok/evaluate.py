r"""Scores generated audio against real clips with almtok's judge (`evaluation/judge.py`): a
trained run's samples, or any system's files.

  python -m almtok.evaluate --workdir=runs/lm --tagger=experiments/evaluation/tagger \
      --clap=experiments/evaluation/clap --out=runs/eval_lm
  python -m almtok.evaluate --workdir=runs/lm --tagger=experiments/evaluation/tagger --num=50 \
      --per_caption=1 --config.sample.cfg_scale=5 --out=runs/eval_quick
  python -m almtok.evaluate --tagger=experiments/evaluation/tagger \
      --dataset=configs/synth_sounds.py --data_dir=runs/tfds \
      --generated_dir=other_system/wavs --captions_csv=other_system/clips.csv --out=runs/eval_other
  python -m almtok.evaluate --compare=runs/eval_lm,runs/eval_dlm --out=runs/lm_vs_dlm

Generation (with --workdir and no --generated_dir): --per_caption clips for each caption of the
split (or its first --num), each with its own seed, as long as the caption's real clip (capped at
the model's context): <out>/generated/CCCCC-K.wav for caption C's K-th clip, listed with its
caption (and the split's clip index) in <out>/generated/clips.csv. A rerun keeps the clips
already written (a batch's seed depends only on --seed, K and the batch, never on where a run
stopped) and refuses a folder made by another run or other settings.

Any system's clips: --generated_dir with --captions_csv, a CSV with a header that pairs files
with captions: `file,caption` (file names relative to --generated_dir), or AudioCaps-style
`audiocap_id,youtube_id,start_time,caption` (a file whose stem is the audiocap_id or youtube_id).
Files are never paired by their order. wav, flac and ogg at any rate are read (resampled to
16 kHz, mixed to mono); a file that cannot be read or is not in the CSV is skipped and named.
The split's real clips come from a run (--workdir) or from a dataset config (--dataset, built
into --data_dir if it is not there yet). The caption metrics need every caption to be one of the
split's; otherwise pick the set metrics alone with --metrics.

References. The set metrics (FD, FD-inf, KID, class frequencies) compare the N generated clips
with N real clips that no split holds (synth_sounds seeds of `reference.py`, cached per tagger),
beside which they put N other such real clips (the noise floor at the same N) and, with a run's
tokenizer, those clips resynthesised (what the tokenizer and vocoder alone cost). A dataset that
is not procedural (debian_sounds) has no pool: its set metrics compare with the split's clips and
have no floor. The caption metrics (KL both ways, adherence) score each clip against its own
caption, against every other caption (the floor) and, as the ceiling, the caption's real clip
resynthesised (real, without a tokenizer). With --clap (an export of `train_clap`), the
contrastive model's metrics join them: the cosine of clip and caption text, and R@1 / R@10 of
the caption among the captions scored. `--metrics` picks from the registry
(judge.METRICS); `--embedding=module:function` adds fd_<name> and kid_<name> on an embedding the
user supplies (VGGish or PANNs with weights on disk: almtok ships none).

Writes <out>/metrics.json and metrics.md (every metric with its interval, floor, ceiling,
direction and embedding, and N), <out>/spectrograms.png (generated beside real clips), and the
per-clip scores (scores.npz, clips.json) from which --compare gives one evaluation minus another
on the same captions with paired intervals (comparison.md).

Shape letters: N clips, C captions, E embedding width.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import os
import time
from collections.abc import Callable, Sequence
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
from almtok.evaluation import clap as clap_lib
from almtok.evaluation import judge
from almtok.evaluation import metrics as metrics_lib
from almtok.evaluation import reference as reference_lib
from almtok.evaluation import tagger as tagger_lib
from almtok.latents import store as latents_lib

CLAP_HINT = ("train one with `python -m almtok.evaluation.train_clap --config=configs/clap.py "
             "--workdir=DIR` and pass --clap=DIR, or use experiments/evaluation/clap")
TAGGER_HINT = ("train one with `python -m almtok.evaluation.train_tagger "
               "--config=configs/tagger.py --workdir=DIR` and pass --tagger=DIR")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
CLIPS_CSV = "clips.csv"


@dataclasses.dataclass
class Reference:
  """A split's clips: captions, labels (JSON text) and waveforms."""
  dataset: str
  seconds: float
  captions: list[str]
  labels: list[str]
  wavs: list[np.ndarray]


def reference_clips(dataset: ml_collections.ConfigDict, data_dir: str, split: str,
                    num: int | None, build: bool = False) -> Reference:
  """The split's clips from the TFDS build of `dataset` in `data_dir` (built first with
  `build`); one line if the build or the split is missing or empty."""
  from almtok.datasets import registry  # pylint: disable=g-import-not-at-top  (TensorFlow)
  if dataset.name not in registry.NAMES:
    raise configlib.ConfigError(f"dataset {dataset.name!r}: evaluate reads the TFDS datasets "
                                f"{list(registry.NAMES)}")
  builder = (registry.build if build else registry.get_builder)(dataset, data_dir)
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
  return Reference(dataset.name, float(dataset.get("seconds", dataset.get("max_seconds", 0.0))),
                   [text(r["caption"]) for r in rows], [text(r["labels"]) for r in rows],
                   [np.asarray(r["audio"], np.float32) for r in rows])


# ---------------------------------------------------------------------------------------------
# Generated clips: made by a run, or read from a folder through a CSV.
# ---------------------------------------------------------------------------------------------


def batch_seed(seed: int, round_: int, batch: int) -> int:
  """The sampling seed of batch `batch` of the `round_`-th clip of every caption."""
  return int(np.random.SeedSequence([seed, round_, batch]).generate_state(1)[0] >> 1)


def generate_clips(generator: inference.Generator, captions: Sequence[str],
                   seconds: Sequence[float], per_caption: int, out_dir: str, batch: int,
                   seed: int) -> str:
  """<out_dir>/CCCCC-K.wav for each caption C and K < per_caption, generating only the batches
  not all written yet, and <out_dir>/clips.csv pairing them with their captions; a folder whose
  clips came from another run, checkpoint or settings is refused in one line."""
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
  names = [[f"{c:05d}-{k}.wav" for c in range(len(captions))] for k in range(per_caption)]
  todo = [(k, b) for k in range(per_caption) for b in range(0, len(captions), batch)
          if not all(os.path.exists(os.path.join(out_dir, n)) for n in names[k][b:b + batch])]
  for k, b in tqdm.tqdm(todo, desc="generate", unit="batch", disable=None):
    group = slice(b, b + batch)
    wav, _ = generator(list(captions[group]), max(seconds[group]), batch_seed(seed, k, b // batch),
                       progress=False)
    for name, w, s in zip(names[k][group], wav, seconds[group]):
      audio.write(os.path.join(out_dir, name), w[:int(round(s * generator.sample_rate))],
                  generator.sample_rate, strategy="limit")
  path = os.path.join(out_dir, CLIPS_CSV)
  with fileio.atomic_write(path, encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "caption", "index"])
    writer.writerows((n, captions[c], c) for row in names for c, n in enumerate(row))
  return path


@dataclasses.dataclass
class Pair:
  """A generated clip's file, its caption, and the split's clip it was made for (when the CSV
  says: column `index`, as `generate_clips` writes it; otherwise found by caption)."""
  path: str
  caption: str
  index: int | None = None


ID_COLUMNS = ("file", "audiocap_id", "youtube_id")


def read_pairs(captions_csv: str, generated_dir: str) -> tuple[list[Pair], list[str]]:
  """(pairs, skipped lines) from a `file,caption` or AudioCaps-style CSV: one line for a CSV
  without those columns; rows whose file is not in the folder, and audio files that no row
  names, are skipped and listed."""
  try:
    with open(captions_csv, encoding="utf-8", newline="") as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise configlib.ConfigError(f"--captions_csv={captions_csv}: {e}") from None
  columns = rows[0].keys() if rows else ()
  keys = [c for c in ID_COLUMNS if c in columns]
  if not keys or "caption" not in columns:
    raise configlib.ConfigError(f"--captions_csv={captions_csv}: want a header with `file,caption`"
                                f" or AudioCaps' `audiocap_id,youtube_id,...,caption`; got "
                                f"{list(columns)}")
  files = sorted(n for n in os.listdir(generated_dir)
                 if os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS)
  by_name = {n: n for n in files}
  by_stem = {os.path.splitext(n)[0]: n for n in files}
  pairs, skipped, used = [], [], set()
  for line, row in enumerate(rows, start=2):
    values = [(row[k] or "").strip() for k in keys]
    # A file named as the `file` column says, or (AudioCaps) by either id with any extension.
    name = next((by_name.get(v) or (by_stem.get(v) if k != "file" else None)
                 for k, v in zip(keys, values) if by_name.get(v) or
                 (k != "file" and by_stem.get(v))), None)
    if name is None:
      skipped.append(f"{captions_csv} line {line}: no audio file {values[0]!r} in "
                     f"{generated_dir}")
      continue
    used.add(name)
    index = row.get("index")
    pairs.append(Pair(os.path.join(generated_dir, name), row["caption"].strip(),
                      int(index) if index not in (None, "") else None))
  skipped += [f"{os.path.join(generated_dir, n)}: not in {captions_csv}"
              for n in files if n not in used]
  return pairs, skipped


def read_audio(paths: Sequence[str]) -> tuple[list[np.ndarray | None], list[str]]:
  """(waveforms at the tagger's rate, None where unreadable; skipped lines)."""
  wavs, skipped = [], []
  for path in paths:
    try:
      wavs.append(audio.load(path, audio.SAMPLE_RATE))
    except audio.AudioError as e:
      skipped.append(str(e))
      wavs.append(None)
  return wavs, skipped


# ---------------------------------------------------------------------------------------------
# Scoring.
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


def external_metrics(name: str, spec: str) -> tuple[judge.Metric, ...]:
  """fd_<name> and kid_<name> on the user's embedding (held in Scored.embedding_NxE of the
  sets they are given)."""
  what = f"{name} (--embedding={spec})"
  return (dataclasses.replace(judge.BY_NAME["fd_tagger"], name=f"fd_{name}", embedding=what),
          dataclasses.replace(judge.BY_NAME["kid_tagger"], name=f"kid_{name}", embedding=what))


def set_rows(metric: judge.Metric, sets: dict[str, tuple[judge.Scored, np.ndarray]],
             ref: judge.Scored, resamples: int) -> dict[str, Any]:
  """A set metric of each named set (scores, caption of each clip) against `ref`."""
  out = {}
  for row, (scored, groups) in sets.items():
    if min(len(scored), len(ref)) >= metric.min_clips:
      out[row] = judge.set_estimate(metric, scored, groups, ref, resamples=resamples).to_json()
  return out


def score_all(metrics: Sequence[judge.Metric], gen: judge.Scored, groups: np.ndarray,
              captions: judge.Captions | None, ceiling: judge.Scored | None,
              ref: judge.Scored, floor_sets: dict[str, judge.Scored], resamples: int
              ) -> dict[str, dict[str, Any]]:
  """Every metric's estimates: set metrics of the generated clips (and of `floor_sets`, each
  clip its own group) against `ref`; caption metrics against `captions`."""
  results = {}
  for metric in tqdm.tqdm(metrics, desc="metrics", unit="metric", disable=None):
    if metric.family == "set":
      sets = {"generated": (gen, groups),
              **{k: (v, np.arange(len(v))) for k, v in floor_sets.items()}}
      results[metric.name] = set_rows(metric, sets, ref, resamples)
    elif captions is not None:
      results[metric.name] = {k: e.to_json() for k, e in judge.caption_estimates(
          metric, gen, groups, captions, resamples=resamples, ceiling=ceiling).items()}
  return results


def run(*, tagger: str, out: str, workdir: str | None = None, split: str = "test",
        num: int | None = None, per_caption: int = 5, batch: int = 16, seed: int = 0,
        sample_overrides: dict[str, Any] | None = None, generated_dir: str | None = None,
        captions_csv: str | None = None, dataset: ml_collections.ConfigDict | None = None,
        data_dir: str = "", metrics: Sequence[str] | None = None, resamples: int = 1000,
        embedding: str | None = None, embedding_name: str = "external",
        reference_cache: str | None = None, clap: str | None = None) -> dict[str, Any]:
  """The command line's work; returns what goes into metrics.json."""
  # --- Checks, before any work ------------------------------------------------------------------
  if not out:
    raise configlib.ConfigError("--out is required")
  if num is not None and num < 2:
    raise configlib.ConfigError(f"--num={num}: at least 2 captions are needed")
  if per_caption < 1:
    raise configlib.ConfigError(f"--per_caption={per_caption}: must be >= 1")
  try:
    chosen = list(judge.select(metrics))
  except ValueError as e:
    raise configlib.ConfigError(f"--metrics: {e}") from None
  if not tagger:
    raise configlib.ConfigError(f"--tagger is empty: {TAGGER_HINT}")
  try:
    tagger_model, tagger_meta = tagger_lib.load(tagger)
  except FileNotFoundError:
    raise configlib.ConfigError(f"--tagger={tagger}: no tagger there; {TAGGER_HINT}") from None
  clap_model = clap_meta = None
  if clap:
    try:
      clap_model, clap_meta = clap_lib.load(clap)
    except FileNotFoundError:
      raise configlib.ConfigError(f"--clap={clap}: no contrastive model there; {CLAP_HINT}"
                                  ) from None
  else:
    needs = [m.name for m in chosen if m.embedding == judge.CLAP]
    if metrics is not None and needs:
      raise configlib.ConfigError(f"--metrics={needs[0]} needs --clap: {CLAP_HINT}")
    chosen = [m for m in chosen if m.embedding != judge.CLAP]
  embed = load_embedding(embedding) if embedding else None
  if embed is not None:
    chosen += external_metrics(embedding_name, embedding)
  generator = tok = run_config = None
  if workdir:
    run_config = state_lib.load_run_config(workdir)
    stats = state_lib.run_stats(workdir)
    if stats.sample_rate != audio.SAMPLE_RATE:
      raise configlib.ConfigError(f"{workdir}: its tokenizer works at {stats.sample_rate} Hz, "
                                  f"the tagger at {audio.SAMPLE_RATE} Hz")
    tok = tokenizers.from_stats(stats)
    latents_dir = state_lib.run_latents_dir(workdir)
    dataset = ml_collections.ConfigDict(latents_lib.read_stats(latents_dir).dataset)
    data_dir = data_dir or os.path.join(os.path.dirname(latents_dir), "tfds")
    if generated_dir is None:
      generator = inference.Generator(
          workdir, inference.run_settings(run_config, sample_overrides, workdir))
  elif generated_dir is None:
    raise configlib.ConfigError("give --workdir (a run to sample), or --generated_dir with "
                                "--captions_csv (clips made elsewhere)")
  elif dataset is None:
    raise configlib.ConfigError("--generated_dir without --workdir needs --dataset (the config "
                                "of the dataset whose split it is scored against) and --data_dir")
  if generated_dir is not None:
    if not os.path.isdir(generated_dir):
      raise configlib.ConfigError(f"--generated_dir={generated_dir}: no such folder")
    if not captions_csv or not os.path.exists(captions_csv):
      raise configlib.ConfigError(f"--captions_csv={captions_csv}: --generated_dir needs a CSV "
                                  "that pairs its files with captions (`file,caption`)")
  ref = reference_clips(dataset, data_dir, split, num, build=workdir is None)
  t0 = time.perf_counter()

  # --- Generated clips --------------------------------------------------------------------------
  context = None
  if generator is not None:
    context = run_config["model"]["max_len"] / generator.tokenizer.frame_rate
    seconds = [min(w.size / audio.SAMPLE_RATE, context) for w in ref.wavs]
    generated_dir = os.path.join(out, "generated")
    captions_csv = generate_clips(generator, ref.captions, seconds, per_caption, generated_dir,
                                  batch, seed)
  generate_s = time.perf_counter() - t0
  pairs, skipped = read_pairs(captions_csv, generated_dir)
  split_index = pair_with_split(pairs, ref, chosen, captions_csv, f"the {split} split" + (
      f"'s first {num} captions (--num)" if num is not None else ""))
  wavs, unreadable = read_audio([p.path for p in pairs])
  skipped += unreadable
  keep = [i for i, w in enumerate(wavs) if w is not None]
  if len(keep) < 2:
    raise configlib.ConfigError(f"fewer than 2 readable generated clips ({len(skipped)} skipped"
                                f"{': ' + skipped[0] if skipped else ''})")
  wavs, texts = [wavs[i] for i in keep], [pairs[i].caption for i in keep]
  paired = split_index is not None
  # Captions scored: the split's that have clips, in split order (or, unpaired, each distinct
  # caption); a clip's group is its caption's position among them.
  keys = [split_index[i] for i in keep] if paired else texts
  used = sorted(set(keys)) if paired else sorted(set(keys), key=keys.index)
  position = {c: i for i, c in enumerate(used)}
  groups = np.asarray([position[k] for k in keys])

  # --- Scores -----------------------------------------------------------------------------------
  t1 = time.perf_counter()
  gen = judge.score_wavs(tagger_model, tagger_meta, wavs, dsp=True, clap=clap_model)
  n = len(gen)
  resynth_key = None if tok is None else json.dumps(dataclasses.asdict(stats.tokenizer),
                                                    sort_keys=True)
  os.makedirs(out, exist_ok=True)
  captions = ceiling = None
  if paired:
    real_wavs = [ref.wavs[c] for c in used]
    captions = judge.Captions(
        [ref.labels[c] for c in used],
        judge.score_wavs(tagger_model, tagger_meta, real_wavs, dsp=True, clap=clap_model),
        None if clap_model is None else clap_lib.embed_captions(
            clap_model, clap_meta, [ref.captions[c] for c in used]))
    ceiling = captions.real
    if tok is not None:   # The real clips through the run's tokenizer and vocoder.
      ceiling = judge.score(tagger_model, tagger_meta, tagger_lib.resynthesise(
          real_wavs, tok, os.path.join(out, "reference_resynth.npz"), resynth_key),
                            clap=clap_model)
  # Clips as long as the split's (cut to the model's context, as the generated ones are).
  seconds = ref.seconds if generator is None else min(ref.seconds, context)
  reference_set, floor_sets, reference_kind, pool_wavs = reference_sets(
      tagger_model, tagger_meta, ref, split, n, seconds, reference_cache, tok, resynth_key,
      out, need_wavs=embed is not None)
  builtin = [m for m in chosen if not m.embedding.endswith(f"(--embedding={embedding})")]
  results_by_metric = score_all(builtin, gen, groups, captions, ceiling, reference_set,
                                floor_sets, resamples)
  if embed is not None:   # The user's embedding in place of the tagger's, same estimates.
    def swap(scored, ws):
      return dataclasses.replace(scored, embedding_NxE=np.asarray(
          embed(ws, audio.SAMPLE_RATE), np.float64))
    ref_wavs = pool_wavs[:n] if pool_wavs is not None else ref.wavs
    sets = {"real (disjoint)": swap(floor_sets["real (disjoint)"], pool_wavs[n:])} if (
        pool_wavs is not None) else {}
    results_by_metric.update(score_all(
        [m for m in chosen if m not in builtin], swap(gen, wavs), groups, None, None,
        swap(reference_set, ref_wavs), sets, resamples))
  metrics_s = time.perf_counter() - t1

  # --- Outputs ----------------------------------------------------------------------------------
  registry = {m.name: m for m in chosen}
  results = dict(
      workdir=workdir, split=split, dataset=ref.dataset, clips=n, captions=len(used),
      per_caption=per_caption if generator is not None else None, paired=paired,
      tagger=tagger, tagger_steps=tagger_meta.get("trained_steps"),
      tagger_sha256=tagger_meta.get("weights_sha256"), clap=clap or None,
      clap_sha256=None if clap_meta is None else clap_meta.get("weights_sha256"),
      resamples=resamples,
      reference=reference_kind,
      ceiling=("the real clips resynthesised through the run's tokenizer" if tok is not None
               else "the real clips"),
      metrics={name: dict(family=registry[name].family, embedding=registry[name].embedding,
                          higher_is_better=registry[name].higher_is_better,
                          description=registry[name].description, values=values)
               for name, values in results_by_metric.items() if values},
      skipped=skipped, generate_seconds=generate_s, metrics_seconds=metrics_s,
      settings=None if generator is None else dataclasses.asdict(generator.settings))
  write_outputs(out, results, gen, groups, captions, ceiling, reference_set,
                [ref.captions[c] for c in used] if paired else None, wavs, texts,
                [ref.wavs[used[g]] for g in groups] if paired else None)
  return results


def pair_with_split(pairs: Sequence[Pair], ref: Reference, chosen: Sequence[judge.Metric],
                    captions_csv: str, where: str) -> list[int] | None:
  """Each pair's clip of the split (its `index` where the CSV gives one that matches its
  caption, else the first clip with its caption), or None when some caption is not the
  split's: then a caption metric asked for is a one-line error, before any audio is read."""
  first = {c: i for i, c in reversed(list(enumerate(ref.captions)))}
  index = []
  for p in pairs:
    given = p.index is not None and p.index < len(ref.captions) and (
        ref.captions[p.index] == p.caption)
    index.append(p.index if given else first.get(p.caption))
  missing = sorted({p.caption for p, i in zip(pairs, index) if i is None})
  if not missing:
    return index
  caption_metrics = [m.name for m in chosen if m.family == "caption"]
  if caption_metrics:
    raise configlib.ConfigError(
        f"{len(missing)} caption(s) of {captions_csv} are not in {where} of {ref.dataset} "
        f"(e.g. {missing[0]!r}), so {caption_metrics[0]} and the other caption metrics cannot "
        f"pair them; score the audio alone with --metrics="
        f"{','.join(m.name for m in chosen if m.family == 'set')}")
  return None


def reference_sets(model: tagger_lib.Tagger, meta: dict[str, Any], ref: Reference, split: str,
                   n: int, seconds: float, cache: str | None, tok: Any, resynth_key: str | None,
                   out: str, need_wavs: bool
                   ) -> tuple[judge.Scored, dict[str, judge.Scored], str, list | None]:
  """(the reference the set metrics compare with, the floor's sets at the same N, what the
  reference is, the 2N reference waveforms if `need_wavs`): for synth_sounds, N reference
  clips no split holds, beside N others (real) and those resynthesised (with a tokenizer);
  otherwise the split's clips, with no floor."""
  if ref.dataset != "synth_sounds":
    return (judge.score_wavs(model, meta, ref.wavs), {},
            f"the {split} split's {len(ref.wavs)} clips ({ref.dataset} is not procedural: no "
            "disjoint real set, so no noise floor)", None)
  pool = reference_lib.pool(model, meta, 2 * n, seconds, cache)
  floor_sets = {"real (disjoint)": pool.take(np.arange(n, 2 * n))}
  wavs = reference_lib.render(2 * n, seconds)[0] if tok is not None or need_wavs else None
  if tok is not None:
    floor_sets["resynthesised (disjoint)"] = judge.score(model, meta, tagger_lib.resynthesise(
        wavs[n:], tok, os.path.join(out, "pool_resynth.npz"), resynth_key))
  return (pool.take(np.arange(n)), floor_sets,
          f"{n} reference clips of {seconds:g} s (synth_sounds seeds no split uses)", wavs)


def write_outputs(out: str, results: dict[str, Any], gen: judge.Scored, groups: np.ndarray,
                  captions: judge.Captions | None, ceiling: judge.Scored | None,
                  reference_set: judge.Scored, texts_used: Sequence[str] | None,
                  wavs: Sequence[np.ndarray], texts: Sequence[str],
                  real_wavs: Sequence[np.ndarray] | None) -> None:
  """metrics.json, metrics.md, spectrograms.png, and (paired) the per-clip scores; an unpaired
  evaluation removes the scores an earlier one left, so that --compare never reads them."""
  fileio.atomic_json(os.path.join(out, "metrics.json"), results, indent=1)
  if captions is not None:
    save_scores(out, gen, groups, captions, ceiling, reference_set, texts_used,
                results["tagger_sha256"], results["clap_sha256"])
  else:
    for name in (SCORES_FILE, CLIPS_FILE):
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
  with fileio.atomic_write(os.path.join(out, "metrics.md"), encoding="utf-8") as f:
    f.write(markdown(results))
  panels, titles = [], []
  for i in range(min(4, len(wavs))):
    panels.append(wavs[i])
    titles.append(f"generated: {texts[i]}")
    if real_wavs is not None:
      panels.append(real_wavs[i])
      titles.append("real clip of that caption")
  plotting.spectrogram_grid(os.path.join(out, "spectrograms.png"), panels, titles,
                            audio.SAMPLE_RATE)


def _cell(est: dict[str, float] | None) -> str:
  if not est:
    return "-"
  return f"{est['value']:.4g} [{est['low']:.4g}, {est['high']:.4g}]"


def markdown(results: dict[str, Any]) -> str:
  """Two tables (set metrics, caption metrics), each value with its 95% interval."""
  per = f", {results['per_caption']} per caption" if results.get("per_caption") else ""
  lines = [f"# {results['workdir'] or 'clips'}: {results['dataset']} {results['split']} split, "
           f"N = {results['clips']} clips of {results['captions']} captions{per}", "",
           f"Tagger {results['tagger']} (weights sha256 {str(results['tagger_sha256'])[:12]})"
           + (f", contrastive model {results['clap']} (weights sha256 "
              f"{str(results['clap_sha256'])[:12]})" if results.get("clap") else "") + ". "
           f"Every value with its 95% bootstrap interval over captions ({results['resamples']} "
           "resamples).", ""]
  metrics = results["metrics"]
  sets = {k: v for k, v in metrics.items() if v["family"] == "set"}
  if sets:
    lines += [f"Set metrics against {results['reference']}; beside the generated clips, N other "
              "real clips (the noise floor) and those resynthesised, at the same N.", "",
              "| metric | generated | real (floor) | resynthesised | better | embedding |",
              "|---|---|---|---|---|---|"]
    for name, v in sets.items():
      e = v["values"]
      lines.append(f"| {name} | {_cell(e.get('generated'))} | {_cell(e.get('real (disjoint)'))} "
                   f"| {_cell(e.get('resynthesised (disjoint)'))} | "
                   f"{'higher' if v['higher_is_better'] else 'lower'} | {v['embedding']} |")
  captions = {k: v for k, v in metrics.items() if v["family"] == "caption"}
  if captions:
    lines += ["", f"Caption metrics: each clip against its own caption (generated), against "
              f"every other caption (floor; gap = how far beyond it, larger is better), and "
              f"the ceiling, {results['ceiling']}; fraction = (generated - floor) / "
              "(ceiling - floor).", "",
              "| metric | generated | floor (other captions) | gap | ceiling | fraction | "
              "better | reads |", "|---|---|---|---|---|---|---|---|"]
    for name, v in captions.items():
      e = v["values"]
      lines.append(f"| {name} | {_cell(e.get('value'))} | {_cell(e.get('floor'))} | "
                   f"{_cell(e.get('gap'))} | {_cell(e.get('ceiling'))} | "
                   f"{_cell(e.get('fraction'))} | "
                   f"{'higher' if v['higher_is_better'] else 'lower'} | {v['embedding']} |")
  if results.get("skipped"):
    lines += ["", f"Skipped ({len(results['skipped'])}):"] + [f"- {s}" for s in results["skipped"]]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Per-clip scores, and comparing two evaluations on the same captions.
# ---------------------------------------------------------------------------------------------

SCORES_FILE, CLIPS_FILE = "scores.npz", "clips.json"


def save_scores(out: str, gen: judge.Scored, groups: np.ndarray, captions: judge.Captions,
                ceiling: judge.Scored, reference_set: judge.Scored, texts: Sequence[str],
                tagger_sha256: str | None, clap_sha256: str | None = None) -> None:
  """What `compare` needs (npz, no pickle; captions as JSON)."""
  arrays = dict(groups=groups, **gen.to_arrays("gen"), **captions.real.to_arrays("real"),
                **ceiling.to_arrays("ceiling"), **reference_set.to_arrays("ref"))
  if captions.clap_CxP is not None:
    arrays["captions_clap"] = captions.clap_CxP
  with fileio.atomic_path(os.path.join(out, SCORES_FILE)) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  fileio.atomic_json(os.path.join(out, CLIPS_FILE), dict(
      captions=list(texts), labels=list(captions.labels), tagger_sha256=tagger_sha256,
      clap_sha256=clap_sha256),
      indent=1)


@dataclasses.dataclass
class Stored:
  """A scored evaluation as `save_scores` wrote it."""
  gen: judge.Scored
  groups: np.ndarray
  captions: judge.Captions
  ceiling: judge.Scored
  ref: judge.Scored
  clips: dict[str, Any]


def load_scores(out: str) -> Stored:
  paths = [os.path.join(out, n) for n in (SCORES_FILE, CLIPS_FILE)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise configlib.ConfigError(f"{out}: no {os.path.basename(missing[0])} (evaluate with "
                                f"--out={out} first, with captions of the split)")
  with np.load(paths[0], allow_pickle=False) as f:
    arrays = dict(f)
  with open(paths[1], encoding="utf-8") as f:
    clips = json.load(f)
  if "groups" not in arrays:
    raise configlib.ConfigError(f"{out}: scores from an older almtok.evaluate; evaluate again")
  get = lambda prefix: judge.Scored.from_arrays(arrays, prefix)
  return Stored(get("gen"), arrays["groups"],
                judge.Captions(clips["labels"], get("real"), arrays.get("captions_clap")),
                get("ceiling"), get("ref"), clips)


def compare(out_a: str, out_b: str, resamples: int = 1000,
            metrics: Sequence[str] | None = None) -> dict[str, Any]:
  """Every metric of evaluation A minus B on the same captions, with a paired bootstrap
  interval (the same captions resampled for both; each one's reference clips resampled as
  well): an interval that excludes 0 says they differ. The contrastive metrics are left out
  unless both were scored with one contrastive model."""
  a, b = load_scores(out_a), load_scores(out_b)
  if a.clips["captions"] != b.clips["captions"]:
    raise configlib.ConfigError(f"{out_a} and {out_b} scored different captions "
                                f"({len(a.clips['captions'])} and {len(b.clips['captions'])}): "
                                "evaluate both on the same split and --num")
  if a.clips.get("tagger_sha256") != b.clips.get("tagger_sha256"):
    raise configlib.ConfigError(f"{out_a} and {out_b} were scored by different taggers: "
                                "evaluate both with the same --tagger")
  clap_a, clap_b = a.clips.get("clap_sha256"), b.clips.get("clap_sha256")
  if clap_a and clap_b and clap_a != clap_b:
    raise configlib.ConfigError(f"{out_a} and {out_b} were scored by different contrastive "
                                "models: evaluate both with the same --clap")
  c = len(a.clips["captions"])
  try:
    chosen = judge.select(metrics)
  except ValueError as e:
    raise configlib.ConfigError(f"--metrics: {e}") from None
  groups = {id(s): judge.members(s.groups) for s in (a, b)}
  same_ref = len(a.ref) == len(b.ref)   # Then the same reference clips: resampled together.
  rows = {}
  for metric in chosen:
    if metric.family == "set":
      if min(len(a.gen), len(b.gen), len(a.ref), len(b.ref)) < metric.min_clips:
        continue
      def value(s, chosen_captions, ref_index, metric=metric):
        return metric.scale * metric.on_sets(s.gen.take(judge.expand(groups[id(s)],
                                                                     chosen_captions)),
                                             s.ref.take(ref_index))
      every = np.arange(c)
      full = (value(a, every, np.arange(len(a.ref))), value(b, every, np.arange(len(b.ref))))
      other = judge.draws(c, len(b.ref), resamples, metric.resample_reference, seed=1)
      diffs = []
      for chosen_captions, ref_index in judge.draws(c, len(a.ref), resamples,
                                                    metric.resample_reference):
        ref_b = ref_index if same_ref else next(other)[1]
        diffs.append(value(a, chosen_captions, ref_index) - value(b, chosen_captions, ref_b))
      diff = metrics_lib.centred_interval(full[0] - full[1], diffs, resamples=resamples)
    else:
      own_a, _ = judge.per_caption(metric.matrix(a.gen, a.captions), a.groups)
      own_b, _ = judge.per_caption(metric.matrix(b.gen, b.captions), b.groups)
      use = ~np.isnan(own_a) & ~np.isnan(own_b)
      if not use.any():
        continue
      full = (float(own_a[use].mean()), float(own_b[use].mean()))
      diff = metrics_lib.mean_with_ci(own_a[use] - own_b[use], resamples=resamples)
    rows[metric.name] = dict(a=full[0], b=full[1], difference=diff.to_json(),
                             differ=not diff.low <= 0.0 <= diff.high,
                             higher_is_better=metric.higher_is_better)
  return dict(a=out_a, b=out_b, captions=c, clips_a=len(a.gen), clips_b=len(b.gen),
              resamples=resamples, rows=rows)


def comparison_markdown(result: dict[str, Any]) -> str:
  lines = [f"# A = {result['a']}, B = {result['b']}: {result['captions']} captions "
           f"(N = {result['clips_a']} and {result['clips_b']} clips)", "",
           f"Paired bootstrap over captions ({result['resamples']} resamples), 95% intervals.",
           "", "| metric | A | B | A - B | 95% CI | differ | better |",
           "|---|---:|---:|---:|---|---|---|"]
  for name, row in result["rows"].items():
    d = row["difference"]
    lines.append(f"| {name} | {row['a']:.4g} | {row['b']:.4g} | {d['value']:.4g} | "
                 f"[{d['low']:.4g}, {d['high']:.4g}] | {'yes' if row['differ'] else 'no'} | "
                 f"{'higher' if row['higher_is_better'] else 'lower'} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------------


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 argv: list[str] | None = None) -> None:
  """The command line (defined only when run as a program, so that tests can import this);
  `argv` (default sys.argv) is where the config flags read their `--config.*` overrides."""
  kw = dict(flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "Training workdir to sample and evaluate.", **kw)
  flags.DEFINE_string("tagger", None, "Directory of an exported tagger (train_tagger).", **kw)
  flags.DEFINE_string("clap", None, "Directory of an exported contrastive model (train_clap): "
                      "adds the clap_* metrics.", **kw)
  flags.DEFINE_string("out", None, "Output directory (generated clips, metrics).", **kw)
  flags.DEFINE_string("split", "test", "Split of the dataset whose captions are scored.", **kw)
  flags.DEFINE_integer("num", None, "Only the first N captions (quick screening).", **kw)
  flags.DEFINE_integer("per_caption", 5, "Clips generated per caption, each with its own seed.",
                       **kw)
  flags.DEFINE_integer("batch", 16, "Captions generated together.", **kw)
  flags.DEFINE_integer("seed", 0, "Seed of the generated clips.", **kw)
  flags.DEFINE_integer("resamples", 1000, "Bootstrap resamples.", **kw)
  flags.DEFINE_list("metrics", None, "Metrics of the registry to compute (default: all): "
                    + ",".join(judge.BY_NAME), **kw)
  flags.DEFINE_string("generated_dir", None, "Score the audio files in this folder instead.",
                      **kw)
  flags.DEFINE_string("captions_csv", None, "CSV pairing --generated_dir's files with captions "
                      "(`file,caption`, or AudioCaps' columns).", **kw)
  flags.DEFINE_string("data_dir", "", "The dataset's TFDS data (default: beside the run's "
                      "latents).", **kw)
  flags.DEFINE_string("reference_cache", None, "Cache of the reference clips' scores (default: "
                      "~/.cache/almtok/reference).", **kw)
  flags.DEFINE_string("embedding", None, "module:function mapping (waveforms, sample rate) to "
                      "embeddings [N, E], e.g. a VGGish or PANNs model whose weights you have "
                      "on disk: adds fd_<name> and kid_<name>.", **kw)
  flags.DEFINE_string("embedding_name", "external", "The <name> of --embedding's metrics.", **kw)
  flags.DEFINE_list("compare", None, "Two --out folders of earlier evaluations (A,B) of the "
                    "same captions: writes A - B per metric with paired intervals to --out.",
                    **kw)
  config_flags.DEFINE_config_dict("config", inference.sample_flag_defaults(),
                                  "--config.sample.KEY=VALUE changes one sampling setting of "
                                  "the run's config.sample.", sys_argv=argv, **kw)
  config_flags.DEFINE_config_file("dataset", None, "Without --workdir: the config of the "
                                  "dataset to score against, e.g. configs/synth_sounds.py.",
                                  sys_argv=argv, **kw)


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  if f.compare:
    if len(f.compare) != 2 or not f.out:
      raise configlib.ConfigError("--compare takes two evaluation folders A,B, and --out")
    result = compare(*f.compare, resamples=f.resamples, metrics=f.metrics)
    os.makedirs(f.out, exist_ok=True)
    fileio.atomic_json(os.path.join(f.out, "comparison.json"), result, indent=1)
    with fileio.atomic_write(os.path.join(f.out, "comparison.md"), encoding="utf-8") as out:
      out.write(comparison_markdown(result))
    print(comparison_markdown(result))
    return
  overrides = {k: v for k, v in f.config.sample.items() if f"config.sample.{k}" in f}
  results = run(workdir=f.workdir, tagger=f.tagger, out=f.out, split=f.split, num=f.num,
                per_caption=f.per_caption, batch=f.batch, seed=f.seed,
                sample_overrides=overrides, generated_dir=f.generated_dir,
                captions_csv=f.captions_csv,
                dataset=f.dataset.dataset if f.dataset is not None else None,
                data_dir=f.data_dir or (f.dataset.data_dir if f.dataset is not None else ""),
                metrics=f.metrics, resamples=f.resamples, embedding=f.embedding,
                embedding_name=f.embedding_name, reference_cache=f.reference_cache,
                clap=f.clap)
  print(markdown(results))
  print(f"generation {results['generate_seconds']:.1f} s, metrics "
        f"{results['metrics_seconds']:.1f} s; {os.path.join(f.out, 'metrics.md')}")


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
