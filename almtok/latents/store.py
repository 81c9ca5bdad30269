"""Prepared latents on disk: the record layout, atomic ArrayRecord shards, and statistics.

A prepared dataset is a folder (`<workdir>/latents/`):

  config.json                                 what produced it; a resumed run must match it
  <split>/<split>-KKKKK-of-NNNNN.array_record  the records of shard K of the split's inputs
  <split>/<split>-KKKKK-of-NNNNN.json          the shard's manifest: records, skips, moments
  stats.json                                  written once every shard is done (`Stats`)
  skipped.jsonl                               one line per input that has no record

Shard K holds the records of inputs [K * inputs_per_shard, (K + 1) * inputs_per_shard) of its
split, in input order; inputs that were skipped are listed in its manifest instead. A shard with
no records has a manifest but no ArrayRecord file. Files appear only whole: each is written under
a temporary name and renamed, the manifest last, so a manifest on disk means the shard is done.

Record layout (no pickle; any language can read it):

  b"ALT1" | uint32 little-endian header length H | H bytes of UTF-8 JSON | latent bytes

The JSON header holds `id`, `caption`, `labels` (JSON text of the dataset's labels), `duration`
(seconds of audio encoded), `num_tokens`, `dtype` ("float16" or "float32") and `shape` [T, C];
the latent bytes are the little-endian C-order T x C array.

Shape letters: T tokens of one clip, C latent channels.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import json
import os
import struct
from typing import Any

import numpy as np

from almtok import fileio

MAGIC = b"ALT1"
_HEADER_LEN = struct.Struct("<I")
LATENT_DTYPES = ("float16", "float32")
STATS_FILE = "stats.json"
SKIPPED_FILE = "skipped.jsonl"
CONFIG_FILE = "config.json"
SHARD_SUFFIX = ".array_record"
# group_size 1 gives each record its own chunk, which random access (Grain) requires.
WRITER_OPTIONS = "group_size:1"


@dataclasses.dataclass(frozen=True)
class LatentRecord:
  """One clip's latents (T x C, unnormalized) and what describes it."""
  id: str
  caption: str
  labels: str
  duration: float
  latents: np.ndarray

  @property
  def num_tokens(self) -> int:
    return int(self.latents.shape[0])


def encode_record(record: LatentRecord) -> bytes:
  """Serialises `record` in the layout described in the module docstring."""
  x_TxC = np.asarray(record.latents)
  if x_TxC.ndim != 2:
    raise ValueError(f"latents must be T x C, got shape {x_TxC.shape}")
  if x_TxC.dtype.name not in LATENT_DTYPES:
    raise ValueError(f"latents must be one of {LATENT_DTYPES}, got {x_TxC.dtype}")
  header = json.dumps({
      "id": record.id, "caption": record.caption, "labels": record.labels,
      "duration": float(record.duration), "num_tokens": int(x_TxC.shape[0]),
      "dtype": x_TxC.dtype.name, "shape": list(x_TxC.shape),
  }, ensure_ascii=False).encode("utf-8")
  body = np.ascontiguousarray(x_TxC, dtype=x_TxC.dtype.newbyteorder("<")).tobytes()
  return MAGIC + _HEADER_LEN.pack(len(header)) + header + body


def decode_header(data: bytes) -> tuple[dict[str, Any], int]:
  """The JSON header of a serialised record and the offset where its latents start."""
  if data[:4] != MAGIC:
    raise ValueError(f"not a latent record (starts with {bytes(data[:4])!r})")
  (length,) = _HEADER_LEN.unpack_from(data, 4)
  start = 4 + _HEADER_LEN.size
  return json.loads(bytes(data[start:start + length]).decode("utf-8")), start + length


def decode_record(data: bytes) -> LatentRecord:
  """Inverse of `encode_record`; the latents are a read-only view of `data`."""
  header, offset = decode_header(data)
  shape = tuple(header["shape"])
  x_TxC = np.frombuffer(data, dtype=np.dtype(header["dtype"]).newbyteorder("<"),
                        count=int(np.prod(shape)), offset=offset).reshape(shape)
  return LatentRecord(id=header["id"], caption=header["caption"], labels=header["labels"],
                      duration=header["duration"], latents=x_TxC)


# ---------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------


def shard_name(split: str, index: int, count: int) -> str:
  """File stem of shard `index` of `count`: `<split>-KKKKK-of-NNNNN`."""
  return f"{split}-{index:05d}-of-{count:05d}"


def write_json_atomic(path: str, value: Any) -> None:
  """Writes JSON that appears whole or not at all (`fileio.atomic_json`)."""
  fileio.atomic_json(path, value, indent=1, ensure_ascii=False)


def write_shard(path: str, records: Iterable[bytes]) -> int:
  """Writes serialised records to an ArrayRecord file at `path`, atomically; returns the count.

  A reader never sees a half-written shard: the records go to a temporary (`.<name>.<pid>-
  <random>.tmp`, which `prepare` removes if a run dies), renamed only after the writer closed it.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  with fileio.atomic_path(path) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
    count = 0
    try:
      for data in records:
        writer.write(data)
        count += 1
    finally:
      writer.close()
  return count


def read_shard(path: str) -> list[LatentRecord]:
  """Every record of one shard, in order (for checks and small tools; training uses Grain)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  try:
    return [decode_record(data) for data in reader.read_all()]
  finally:
    reader.close()


def shard_paths(latents_dir: str, split: str, stats: Stats | None = None) -> list[str]:
  """Paths of the split's non-empty shards, in order, as listed in stats.json."""
  stats = read_stats(latents_dir) if stats is None else stats
  if split not in stats.splits:
    raise ValueError(f"no split {split!r} in {latents_dir}; it has {sorted(stats.splits)}")
  return [os.path.join(latents_dir, split, shard.file)
          for shard in stats.splits[split].shards if shard.records]


# ---------------------------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Moments:
  """Per-channel count, mean, sum of squared deviations, minimum and maximum, mergeable across
  shards.

  Float64 and Chan's pairwise update, so that the mean and variance of many shards are exact to
  rounding whatever the order they are merged in. With nothing seen the extremes are +inf (min)
  and -inf (max), so that merging leaves the other side's; where they are unknown (a manifest
  written before they were recorded) they are -inf (min) and +inf (max), so that any merge with
  such a shard stays unbounded and stats.json records no range rather than a partial one.
  """
  count: int
  mean_C: np.ndarray
  m2_C: np.ndarray
  min_C: np.ndarray
  max_C: np.ndarray

  @classmethod
  def zeros(cls, channels: int) -> Moments:
    return cls(0, np.zeros(channels, np.float64), np.zeros(channels, np.float64),
               np.full(channels, np.inf), np.full(channels, -np.inf))

  @classmethod
  def of(cls, x_TxC: np.ndarray) -> Moments:
    x_TxC = np.asarray(x_TxC, np.float64)
    if not x_TxC.shape[0]:
      return cls.zeros(x_TxC.shape[1])
    mean_C = x_TxC.mean(axis=0)
    m2_C = np.square(x_TxC - mean_C[None, :]).sum(axis=0)
    return cls(int(x_TxC.shape[0]), mean_C, m2_C, x_TxC.min(axis=0), x_TxC.max(axis=0))

  def merge(self, other: Moments) -> Moments:
    n = self.count + other.count
    lo_C, hi_C = np.minimum(self.min_C, other.min_C), np.maximum(self.max_C, other.max_C)
    if n == 0:
      return Moments(0, self.mean_C.copy(), self.m2_C.copy(), lo_C, hi_C)
    delta_C = other.mean_C - self.mean_C
    mean_C = self.mean_C + delta_C * (other.count / n)
    m2_C = self.m2_C + other.m2_C + np.square(delta_C) * (self.count * other.count / n)
    return Moments(n, mean_C, m2_C, lo_C, hi_C)

  def std_C(self) -> np.ndarray:
    """Population standard deviation (zero when there is no data)."""
    return np.sqrt(self.m2_C / max(self.count, 1))

  def to_json(self) -> dict[str, Any]:
    out = {"count": self.count, "mean": self.mean_C.tolist(), "m2": self.m2_C.tolist()}
    if self.count:
      out.update(min=self.min_C.tolist(), max=self.max_C.tolist())
    return out

  @classmethod
  def from_json(cls, value: Mapping[str, Any]) -> Moments:
    mean_C = np.asarray(value["mean"], np.float64)
    count = int(value["count"])
    unknown = np.inf if count else -np.inf
    return cls(count, mean_C, np.asarray(value["m2"], np.float64),
               np.asarray(value.get("min", np.full(mean_C.shape, -unknown)), np.float64),
               np.asarray(value.get("max", np.full(mean_C.shape, unknown)), np.float64))


# ---------------------------------------------------------------------------------------------
# Shard manifests and stats.json: one typed reader and writer each.
# ---------------------------------------------------------------------------------------------

STATS_FORMAT = "almtok-latents-1"
# Channels whose latents barely vary are divided by this instead of their own spread.
STD_FLOOR = 1e-5


@dataclasses.dataclass(frozen=True, eq=False)
class Manifest:
  """What one finished shard holds: written after its ArrayRecord file, so its presence on disk
  marks the shard as done. `skipped` holds the lines skipped.jsonl gets (dicts with `kind`)."""
  split: str
  shard: int
  num_shards: int
  inputs: tuple[int, int]
  file: str | None
  records: int
  skipped: tuple[dict[str, Any], ...]
  tokens: int
  max_tokens: int
  seconds: float
  moments: Moments

  def to_json(self) -> dict[str, Any]:
    return {"split": self.split, "shard": self.shard, "num_shards": self.num_shards,
            "inputs": list(self.inputs), "file": self.file, "records": self.records,
            "skipped": list(self.skipped), "tokens": self.tokens, "max_tokens": self.max_tokens,
            "seconds": self.seconds, "moments": self.moments.to_json()}

  @classmethod
  def from_json(cls, value: Mapping[str, Any]) -> Manifest:
    return cls(value["split"], int(value["shard"]), int(value["num_shards"]),
               tuple(value["inputs"]), value["file"], int(value["records"]),
               tuple(value["skipped"]), int(value["tokens"]), int(value["max_tokens"]),
               float(value["seconds"]), Moments.from_json(value["moments"]))


def write_manifest(path: str, manifest: Manifest) -> None:
  write_json_atomic(path, manifest.to_json())


def read_manifest(path: str) -> Manifest | None:
  """The finished shard's manifest, or None if the shard is not done (no manifest, or its
  ArrayRecord file was removed since, so that it is redone)."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    manifest = Manifest.from_json(json.load(f))
  if manifest.file and not os.path.exists(os.path.join(os.path.dirname(path), manifest.file)):
    return None
  return manifest


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """The tokenizer that encoded the latents: `tokenizers.get(name, **params)` rebuilds it."""
  name: str
  params: dict[str, Any]
  sample_rate: int
  frame_rate: float
  latent_dim: int


@dataclasses.dataclass(frozen=True)
class ShardEntry:
  file: str | None
  records: int


@dataclasses.dataclass(frozen=True)
class SplitStats:
  inputs: int
  records: int
  skipped: int
  tokens: int
  max_tokens: int
  seconds: float
  shards: tuple[ShardEntry, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Stats:
  """stats.json: what the latents are, the train split's per-channel moments and extremes
  (unnormalized; the extremes are None for latents prepared before they were recorded), each
  split's counts and shards, and the skips by kind."""
  tokenizer: TokenizerSpec
  latent_dtype: str
  dataset: dict[str, Any]
  normalized_from: str | None
  train_tokens: int
  mean_C: np.ndarray
  std_C: np.ndarray
  min_C: np.ndarray | None
  max_C: np.ndarray | None
  splits: dict[str, SplitStats]
  skipped_total: int
  skipped_by_kind: dict[str, int]

  @property
  def sample_rate(self) -> int:
    return self.tokenizer.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.tokenizer.frame_rate

  @property
  def latent_dim(self) -> int:
    return self.tokenizer.latent_dim

  def replace(self, **changes: Any) -> Stats:
    return dataclasses.replace(self, **changes)

  def to_json(self) -> dict[str, Any]:
    extremes = ({} if self.min_C is None or self.max_C is None
                else {"min": self.min_C.tolist(), "max": self.max_C.tolist()})
    return {
        "format": STATS_FORMAT, "tokenizer": dataclasses.asdict(self.tokenizer),
        "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
        "latent_dim": self.latent_dim, "latent_dtype": self.latent_dtype,
        "dataset": self.dataset, "normalized_from": self.normalized_from,
        "train_tokens": self.train_tokens, "mean": self.mean_C.tolist(),
        "std": self.std_C.tolist(), **extremes,
        "splits": {name: dict(dataclasses.asdict(s), shards=[dataclasses.asdict(e)
                                                             for e in s.shards])
                   for name, s in self.splits.items()},
        "skipped": {"total": self.skipped_total, "by_kind": self.skipped_by_kind},
    }

  @classmethod
  def from_json(cls, value: Mapping[str, Any], where: str = STATS_FILE) -> Stats:
    if value.get("format") != STATS_FORMAT:
      raise ValueError(f"{where}: stats of format {value.get('format')!r}; this almtok reads "
                       f"{STATS_FORMAT!r}")
    floats = lambda key: (np.asarray(value[key], np.float64) if key in value else None)
    spec = {f.name for f in dataclasses.fields(TokenizerSpec)}
    if set(value["tokenizer"]) != spec:
      raise ValueError(f"{where}: its tokenizer spec has keys {sorted(value['tokenizer'])}, "
                       f"this almtok reads {sorted(spec)}")
    for key in ("mean", "std"):
      if key not in value:
        raise ValueError(f"{where}: no {key!r}")
    return cls(
        tokenizer=TokenizerSpec(**value["tokenizer"]), latent_dtype=value["latent_dtype"],
        dataset=value["dataset"],
        # Latents prepared before the key's spelling changed spell it "normalised_from".
        normalized_from=value.get("normalized_from", value.get("normalised_from")),
        train_tokens=int(value["train_tokens"]), mean_C=floats("mean"), std_C=floats("std"),
        min_C=floats("min"), max_C=floats("max"),
        splits={name: SplitStats(**dict(s, shards=tuple(ShardEntry(**e) for e in s["shards"])))
                for name, s in value["splits"].items()},
        skipped_total=int(value["skipped"]["total"]),
        skipped_by_kind=dict(value["skipped"]["by_kind"]))

  @classmethod
  def of_manifests(cls, manifests: Mapping[str, Sequence[Manifest]], *,
                   tokenizer: TokenizerSpec, latent_dtype: str, dataset: dict[str, Any],
                   kind_order: Sequence[str] = ()) -> Stats:
    """Merges the shards' manifests: each split's counts, and the train split's moments (mean
    0, std 1 when it has no tokens). Skip kinds are listed in `kind_order`, others after."""
    splits, by_kind = {}, collections.Counter()
    for split, group in manifests.items():
      for m in group:
        by_kind.update(s["kind"] for s in m.skipped)
      splits[split] = SplitStats(
          inputs=sum(m.inputs[1] - m.inputs[0] for m in group),
          records=sum(m.records for m in group), skipped=sum(len(m.skipped) for m in group),
          tokens=sum(m.tokens for m in group),
          max_tokens=max((m.max_tokens for m in group), default=0),
          seconds=sum(m.seconds for m in group),
          shards=tuple(ShardEntry(m.file, m.records) for m in group))
    train = Moments.zeros(tokenizer.latent_dim)
    for m in manifests.get("train", ()):
      train = train.merge(m.moments)
    if train.count:
      mean_C, std_C, source = train.mean_C, np.maximum(train.std_C(), STD_FLOOR), "train"
    else:
      mean_C, std_C, source = (np.zeros(tokenizer.latent_dim), np.ones(tokenizer.latent_dim),
                               None)
    # The extremes are known only if every train shard recorded them.
    known = bool(train.count) and np.all(np.isfinite(train.min_C)) and np.all(
        np.isfinite(train.max_C))
    rank = {k: i for i, k in enumerate(kind_order)}
    order = sorted(by_kind, key=lambda k: (rank.get(k, len(rank)), k))
    return cls(tokenizer=tokenizer, latent_dtype=latent_dtype, dataset=dataset,
               normalized_from=source, train_tokens=train.count, mean_C=mean_C, std_C=std_C,
               min_C=train.min_C if known else None, max_C=train.max_C if known else None,
               splits=splits, skipped_total=sum(by_kind.values()),
               skipped_by_kind={k: by_kind[k] for k in order})


def write_stats(latents_dir: str, stats: Stats,
                manifests: Mapping[str, Sequence[Manifest]]) -> None:
  """Writes skipped.jsonl (every manifest's skips, in order) and then stats.json."""
  with fileio.atomic_write(os.path.join(latents_dir, SKIPPED_FILE), encoding="utf-8") as f:
    for group in manifests.values():
      for m in group:
        for s in m.skipped:
          f.write(json.dumps(s, ensure_ascii=False) + "\n")
  write_json_atomic(os.path.join(latents_dir, STATS_FILE), stats.to_json())


def read_stats(latents_dir: str) -> Stats:
  """The stats.json of a prepared dataset (a clear error if preparation has not finished)."""
  path = os.path.join(latents_dir, STATS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: run `python -m almtok.prepare` to completion "
                            "for this workdir first")
  return read_stats_file(path)


def read_stats_file(path: str) -> Stats:
  with open(path, encoding="utf-8") as f:
    return Stats.from_json(json.load(f), path)


# ---------------------------------------------------------------------------------------------
# Normalization.
# ---------------------------------------------------------------------------------------------


def normalizer(stats: Stats) -> tuple[np.ndarray, np.ndarray]:
  """(mean_C, std_C) as float32; std is already floored (`STD_FLOOR`)."""
  return np.asarray(stats.mean_C, np.float32), np.asarray(stats.std_C, np.float32)


def _over_last_axis(a_C: np.ndarray, ndim: int) -> np.ndarray:
  return a_C.reshape((1,) * (ndim - 1) + (a_C.size,))


def normalize(x_xC: Any, stats: Stats) -> Any:
  """The one normalization of latents: (x - mean) * (1 / std) per channel over the last axis,
  float32 (1 / std taken in float64), on numpy or JAX arrays of any rank. The training
  pipeline, prompts, quantizers and bounds all go through it, so they agree to the bit."""
  mean_C, std_C = normalizer(stats)
  inv_std_C = np.asarray(1.0 / np.asarray(std_C, np.float64), np.float32)
  x_xC = x_xC.astype(np.float32) if hasattr(x_xC, "astype") else np.asarray(x_xC, np.float32)
  return (x_xC - _over_last_axis(mean_C, x_xC.ndim)) * _over_last_axis(inv_std_C, x_xC.ndim)


def denormalize(x_xC: Any, stats: Stats) -> Any:
  """The inverse of `normalize`: x * std + mean over the last axis (numpy or JAX, any rank)."""
  mean_C, std_C = normalizer(stats)
  return x_xC * _over_last_axis(std_C, x_xC.ndim) + _over_last_axis(mean_C, x_xC.ndim)


def data_range(stats: Stats) -> tuple[np.ndarray, np.ndarray] | None:
  """(lo_C, hi_C): the range of each channel of the normalized train latents, float32, or None
  for a dataset prepared before almtok recorded it."""
  if stats.min_C is None or stats.max_C is None:
    return None
  return (normalize(np.asarray(stats.min_C, np.float32), stats),
          normalize(np.asarray(stats.max_C, np.float32), stats))
