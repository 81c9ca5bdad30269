r"""Encodes captioned audio into tokenizer latents: ArrayRecord shards, stats and a skip report.

  python -m almtok.prepare --config=configs/prepare.py:synth_sounds --workdir=/tmp/synth
  python -m almtok.prepare --config=configs/prepare.py:synth_sounds,size=tiny,seconds=1.0 \
      --workdir=/tmp/synth_tiny
  python -m almtok.prepare --config=configs/prepare.py:debian_sounds --workdir=/tmp/debian
  python -m almtok.prepare \
      --config=configs/prepare.py:audiocaps,audio_dir=/data/ac/audio,csv_dir=/data/ac \
      --workdir=/tmp/audiocaps

Inputs (`config.dataset.name`):
  synth_sounds, debian_sounds  TFDS builders, built offline into `config.data_dir` first
                               (empty: <workdir>/tfds); every record of every split is an input.
  audiocaps                    a folder of audio and one CSV per split in AudioCaps' layout
                               (header `audiocap_id,youtube_id,start_time,caption`); every row
                               is an input. Its audio is found by file stem, first in
                               `<audio_dir>/<csv stem>/` then in `<audio_dir>/`: the file named
                               `<audiocap_id>.<ext>`, else `<youtube_id>.<ext>` (AudioCaps gives
                               each validation and test clip five captions, so those files are
                               usually named by YouTube id and shared by five rows); `<ext>` is
                               any format soundfile reads.

Each input becomes a record or a line of skipped.jsonl with a reason; `kind` in that line is one
of SKIP_KINDS. Audio is mixed to mono and resampled to the tokenizer's rate (never skipped for
that), cut to its first `max_seconds`, and skipped when shorter than `min_seconds` (or than one
token), when its peak is at or below `silence_db` dBFS, or when it cannot be read, is empty or
holds non-finite samples.

Encoding is batched and jitted: a clip is zero-padded to the next multiple of `bucket_seconds`,
so that only one program per bucket length is compiled, and its latents are cut back to
floor(seconds * frame_rate) tokens (zero padding may touch its last token's analysis window).

Output in <workdir>/latents/, laid out as `almtok/latents/store.py` describes. A run resumes where
an earlier one stopped: finished shards are kept as they are and the rest are redone. stats.json
holds the per-channel mean and standard deviation of the train split's latents, which the data
pipeline uses to normalize.

Shape letters: B clips in an encoder batch, S samples, T tokens, C latent channels.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import math
import os
import time
from typing import Any

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import tqdm

from almtok import audio
from almtok import configlib
from almtok import tokenizers
from almtok.datasets.inputs import (CSV_SPLITS, FOLDER_NAMES, NAMES, SKIP_KINDS, Clip,
                                    InputSet, Skipped, list_inputs)
from almtok.latents import store as latents
from almtok.tokenizers import AudioTokenizer

# ---------------------------------------------------------------------------------------------
# Checking and encoding clips.
# ---------------------------------------------------------------------------------------------


def num_tokens(num_samples: int, sample_rate: int, frame_rate: float) -> int:
  """Tokens a clip of `num_samples` keeps: the whole token frames it covers."""
  # The small epsilon keeps exact multiples (4 s at 25 Hz = 100) from rounding down.
  return int(math.floor(num_samples * frame_rate / sample_rate + 1e-6))


def check_clip(clip: Clip, *, sample_rate: int, frame_rate: float, min_seconds: float,
               max_seconds: float, silence_db: float) -> np.ndarray:
  """The clip's waveform cut to `max_seconds`; raises `Skipped` if it is too short or silent."""
  wav_S = clip.wav_S[:int(round(max_seconds * sample_rate))]
  seconds = wav_S.size / sample_rate
  if seconds < min_seconds or num_tokens(wav_S.size, sample_rate, frame_rate) < 1:
    raise Skipped(clip.id, clip.source, f"too short ({seconds:.3f} s; at least "
                  f"{max(min_seconds, 1 / frame_rate):.3f} s needed)")
  peak = audio.peak(wav_S)
  if peak <= 10.0 ** (silence_db / 20.0):
    level = 20.0 * math.log10(peak) if peak > 0 else float("-inf")
    raise Skipped(clip.id, clip.source, f"silent (peak {level:.1f} dBFS <= {silence_db} dBFS)")
  return wav_S


class BucketEncoder:
  """Batched, jitted `tokenizer.encode` over clips of different lengths.

  Every call encodes a full B x S batch (unused rows are zeros) where S is a multiple of the
  bucket length, so the number of compiled programs is the number of distinct buckets.
  """

  def __init__(self, tokenizer: AudioTokenizer, batch_size: int, bucket_seconds: float,
               jit: bool = True):
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    self.bucket_samples = max(1, int(round(bucket_seconds * tokenizer.sample_rate)))
    self._encode = jax.jit(tokenizer.encode) if jit else tokenizer.encode

  def bucket(self, num_samples: int) -> int:
    """The padded length of a clip of `num_samples`."""
    return -(-num_samples // self.bucket_samples) * self.bucket_samples

  def __call__(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Latents (float32, T_i x C) of up to `batch_size` clips that share one bucket."""
    if not 1 <= len(wavs) <= self.batch_size:
      raise ValueError(f"expected 1 to {self.batch_size} clips, got {len(wavs)}")
    length = self.bucket(max(w.size for w in wavs))
    wav_BxS = np.zeros((self.batch_size, length), np.float32)
    for b, wav_S in enumerate(wavs):
      wav_BxS[b, :wav_S.size] = wav_S
    x_BxTxC = np.asarray(self._encode(wav_BxS), np.float32)
    out = []
    for b, wav_S in enumerate(wavs):
      t = min(x_BxTxC.shape[1], num_tokens(wav_S.size, self.tokenizer.sample_rate,
                                           self.tokenizer.frame_rate))
      out.append(x_BxTxC[b, :t])
    return out


def _encode_shard(inputs: InputSet, start: int, stop: int, encoder: BucketEncoder,
                  options: ml_collections.ConfigDict,
                  progress: Callable[[int], Any]) -> list[latents.LatentRecord | Skipped]:
  """Records or skips of inputs [start, stop), in input order."""
  tok = encoder.tokenizer
  dtype = np.dtype(options.latent_dtype)
  results: dict[int, latents.LatentRecord | Skipped] = {}
  pending: dict[int, list[tuple[int, Clip, np.ndarray]]] = collections.defaultdict(list)

  def flush(bucket: int) -> None:
    group = pending.pop(bucket, [])
    if not group:
      return
    for (i, clip, wav_S), x_TxC in zip(group, encoder([w for _, _, w in group])):
      stored_TxC = x_TxC.astype(dtype)
      if not np.all(np.isfinite(stored_TxC)):
        results[i] = Skipped(clip.id, clip.source,
                             f"non-finite latents (after casting to {dtype.name})")
      else:
        results[i] = latents.LatentRecord(clip.id, clip.caption, clip.labels,
                                          wav_S.size / tok.sample_rate, stored_TxC)
    progress(len(group))

  for i in range(start, stop):
    try:
      clip = inputs.load(i, tok.sample_rate)
      wav_S = check_clip(clip, sample_rate=tok.sample_rate, frame_rate=tok.frame_rate,
                         min_seconds=options.min_seconds, max_seconds=options.max_seconds,
                         silence_db=options.silence_db)
    except Skipped as s:
      results[i] = s
      progress(1)
      continue
    bucket = encoder.bucket(wav_S.size)
    pending[bucket].append((i, clip, wav_S))
    if len(pending[bucket]) == encoder.batch_size:
      flush(bucket)
  for bucket in sorted(pending):
    flush(bucket)
  return [results[i] for i in range(start, stop)]


# ---------------------------------------------------------------------------------------------
# Splits, shards and statistics.
# ---------------------------------------------------------------------------------------------


def _prepare_split(split: str, inputs: InputSet, encoder: BucketEncoder,
                   options: ml_collections.ConfigDict, out_dir: str,
                   progress: Callable[[int], Any]) -> tuple[list[latents.Manifest], int]:
  """Encodes the shards of one split that are not done yet.

  Returns every shard's manifest, and how many inputs this call read (not resumed).
  """
  os.makedirs(out_dir, exist_ok=True)
  per_shard = options.inputs_per_shard
  count = max(1, -(-len(inputs) // per_shard))
  manifests, read = [], 0
  for k in range(count):
    name = latents.shard_name(split, k, count)
    manifest_path = os.path.join(out_dir, name + ".json")
    start, stop = k * per_shard, min(len(inputs), (k + 1) * per_shard)
    done = latents.read_manifest(manifest_path)
    if done is not None:
      manifests.append(done)
      progress(stop - start)
      continue
    results = _encode_shard(inputs, start, stop, encoder, options, progress)
    read += stop - start
    records = [r for r in results if isinstance(r, latents.LatentRecord)]
    moments = latents.Moments.zeros(encoder.tokenizer.latent_dim)
    for r in records:
      moments = moments.merge(latents.Moments.of(r.latents))
    file = name + latents.SHARD_SUFFIX if records else None
    if file:
      latents.write_shard(os.path.join(out_dir, file),
                          (latents.encode_record(r) for r in records))
    manifest = latents.Manifest(
        split=split, shard=k, num_shards=count, inputs=(start, stop), file=file,
        records=len(records),
        skipped=tuple(r.to_json(split) for r in results if isinstance(r, Skipped)),
        tokens=sum(r.num_tokens for r in records),
        max_tokens=max((r.num_tokens for r in records), default=0),
        seconds=sum(r.duration for r in records), moments=moments)
    # The manifest goes last: its presence is what marks the shard as done.
    latents.write_manifest(manifest_path, manifest)
    manifests.append(manifest)
  return manifests, read


def _fingerprint(config: ml_collections.ConfigDict, tokenizer: AudioTokenizer,
                 inputs: Mapping[str, InputSet]) -> dict[str, Any]:
  """Everything that decides the content of the shards (not batch size or jit)."""
  options = config.prepare
  return {
      "dataset": config.dataset.to_dict(),
      "tokenizer": dataclasses.asdict(_tokenizer_spec(config, tokenizer)),
      "prepare": {k: options[k] for k in ("max_seconds", "min_seconds", "silence_db",
                                         "bucket_seconds", "inputs_per_shard", "latent_dtype")},
      "inputs": {split: len(s) for split, s in inputs.items()},
  }


def _tokenizer_spec(config: ml_collections.ConfigDict,
                    tokenizer: AudioTokenizer) -> latents.TokenizerSpec:
  return latents.TokenizerSpec(
      name=config.tokenizer.name,
      params={k: v for k, v in config.tokenizer.to_dict().items() if k != "name"},
      sample_rate=int(tokenizer.sample_rate), frame_rate=float(tokenizer.frame_rate),
      latent_dim=int(tokenizer.latent_dim))


def _claim(latents_dir: str, fingerprint: dict[str, Any]) -> None:
  """Records what this folder holds, or checks that a resumed run prepares the same thing."""
  os.makedirs(latents_dir, exist_ok=True)
  path = os.path.join(latents_dir, latents.CONFIG_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      before = json.load(f)
    # Round-trip through JSON so tuples and lists compare equal.
    now = json.loads(json.dumps(fingerprint))
    if before != now:
      differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
      raise configlib.ConfigError(
          f"{latents_dir} holds latents prepared differently (differs in {differ}); "
          "use another --workdir or delete that folder")
    return
  latents.write_json_atomic(path, fingerprint)


def _remove_stale_temporaries(latents_dir: str) -> None:
  """Deletes half-written files that an interrupted run left (only this layout's own names)."""
  for root, _, files in os.walk(latents_dir):
    for name in files:
      if name.endswith(".tmp"):
        os.remove(os.path.join(root, name))


# ---------------------------------------------------------------------------------------------
# The whole job.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `prepare` did: the folder's stats, and how many inputs this run read (not in shards
  finished before) in how many seconds (encoding and compiling, not building a TFDS dataset)."""
  stats: latents.Stats
  latents_dir: str
  encoded: int
  seconds_taken: float


def prepare(config: ml_collections.ConfigDict, workdir: str, *,
            tokenizer: AudioTokenizer | None = None,
            progress_bar: bool | None = None) -> Prepared:
  """Encodes every input of every split into <workdir>/latents; resumes an interrupted run.

  Args:
    config: a config from configs/prepare.py.
    workdir: output root.
    tokenizer: overrides the tokenizer that `config.tokenizer` names.
    progress_bar: None shows a tqdm bar on terminals only.

  """
  tokenizer = make_tokenizer(config.tokenizer) if tokenizer is None else tokenizer
  latents_dir = os.path.join(workdir, "latents")
  inputs = list_inputs(config, workdir)
  fingerprint = _fingerprint(config, tokenizer, inputs)
  _claim(latents_dir, fingerprint)
  _remove_stale_temporaries(latents_dir)
  t0 = time.perf_counter()  # Encoding time, compiling included; not building a TFDS dataset.
  encoder = BucketEncoder(tokenizer, config.prepare.batch_size, config.prepare.bucket_seconds,
                          jit=config.prepare.jit)
  total = sum(len(s) for s in inputs.values())
  manifests = {}
  encoded = 0
  with tqdm.tqdm(total=total, unit="clip", desc="prepare", dynamic_ncols=True,
                 disable=None if progress_bar is None else not progress_bar) as bar:
    for split, split_inputs in inputs.items():
      bar.set_postfix_str(split)
      manifests[split], read = _prepare_split(split, split_inputs, encoder, config.prepare,
                                              os.path.join(latents_dir, split), bar.update)
      encoded += read
  stats = latents.Stats.of_manifests(
      manifests, tokenizer=_tokenizer_spec(config, tokenizer),
      latent_dtype=config.prepare.latent_dtype, dataset=fingerprint["dataset"],
      kind_order=SKIP_KINDS)
  latents.write_stats(latents_dir, stats, manifests)
  return Prepared(stats, latents_dir, encoded, time.perf_counter() - t0)


def make_tokenizer(tokenizer_config: ml_collections.ConfigDict) -> AudioTokenizer:
  """The tokenizer that a config's `tokenizer` block names (other keys are its kwargs)."""
  kwargs = {k: v for k, v in tokenizer_config.to_dict().items() if k != "name"}
  try:
    return tokenizers.get(tokenizer_config.name, **kwargs)
  except (KeyError, ValueError, TypeError) as e:
    raise configlib.ConfigError(f"config.tokenizer.name={tokenizer_config.name!r}: {e}") from e


def summary_line(stats: latents.Stats) -> str:
  """`processed N, skipped M (unreadable 2, silent 1, ...)`."""
  processed = sum(s.records for s in stats.splits.values())
  kinds = ", ".join(f"{k} {n}" for k, n in stats.skipped_by_kind.items())
  return f"processed {processed}, skipped {stats.skipped_total}" + (
      f" ({kinds})" if kinds else "")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Range checks beyond `configlib.validate`, before any work starts."""
  configlib.validate(config, choices={"dataset.name": NAMES,
                                      "prepare.latent_dtype": latents.LATENT_DTYPES})
  options = config.prepare
  if not (isinstance(options.inputs_per_shard, int) and options.inputs_per_shard >= 1):
    raise configlib.ConfigError(f"config.prepare.inputs_per_shard={options.inputs_per_shard!r}: "
                                "must be an integer >= 1")
  if options.min_seconds > options.max_seconds:
    raise configlib.ConfigError(f"config.prepare.min_seconds={options.min_seconds}: must not "
                                f"exceed config.prepare.max_seconds={options.max_seconds}")
  if options.silence_db > 0:
    raise configlib.ConfigError(f"config.prepare.silence_db={options.silence_db}: must be <= 0 "
                                "(dBFS)")
  if config.dataset.name in FOLDER_NAMES:
    if not os.path.isdir(os.path.expanduser(config.dataset.audio_dir)):
      raise configlib.ConfigError(f"config.dataset.audio_dir={config.dataset.audio_dir!r}: "
                                  "not a folder")
    if not any(config.dataset[key] for _, key in CSV_SPLITS):
      raise configlib.ConfigError("config.dataset: set at least one of "
                                  f"{[key for _, key in CSV_SPLITS]}")


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  config_flags.DEFINE_config_file("config", None, "Preparation config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory; latents go to <workdir>/latents.")
  flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
  del argv
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  check_config(config)
  if not workdir:
    raise configlib.ConfigError("--workdir is required")
  tokenizer = make_tokenizer(config.tokenizer)
  logging.set_verbosity(logging.WARNING)
  done = prepare(config, workdir, tokenizer=tokenizer)
  for split, s in done.stats.splits.items():
    print(f"  {split:<10} {s.records:>7} records  {s.skipped:>5} skipped  "
          f"{s.tokens:>9} tokens  {s.seconds / 3600:8.3f} h  {len(s.shards)} shards")
  rate = done.encoded / max(done.seconds_taken, 1e-9)
  print(f"{summary_line(done.stats)}; {done.encoded} clips encoded by this run at "
        f"{rate:.1f} clips/s")
  print(f"latents: {done.latents_dir} (skips listed in {latents.SKIPPED_FILE})")


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
