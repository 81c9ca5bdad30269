"""The inputs of `almtok.prepare`: per split, a fixed-order set of captioned clips read as mono
audio at the tokenizer's rate.

Two kinds of source: a built TFDS dataset with almtok's clip features (`synth_sounds`,
`debian_sounds`), or an AudioCaps-style CSV (`audiocap_id,youtube_id,start_time,caption`) per
split with the audio files in a folder (`audiocaps`; the layout is in `almtok/prepare.py`'s
docstring). An input that cannot be read raises `Skipped`, which names why (`SKIP_KINDS`), so that
preparation records it and goes on.

Shape letters: S samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import csv
import dataclasses
import json
import os
from typing import Any, NamedTuple, Protocol

import ml_collections
import numpy as np
import soundfile as sf

from almtok import audio
from almtok import configlib

TFDS_NAMES = ("synth_sounds", "debian_sounds")
FOLDER_NAMES = ("audiocaps",)
NAMES = TFDS_NAMES + FOLDER_NAMES
# Why inputs are skipped, in the order the summary lists them.
SKIP_KINDS = ("missing", "unreadable", "empty", "non-finite", "too short", "silent",
              "bad row", "duplicate id", "non-finite latents")
AUDIO_EXTENSIONS = frozenset({f".{f.lower()}" for f in sf.available_formats()}
                             | {".aif", ".aifc", ".oga", ".opus"})
CSV_SPLITS = (("train", "train_csv"), ("validation", "validation_csv"), ("test", "test_csv"))




class Clip(NamedTuple):
  """One input, read: mono audio at the tokenizer's rate (not yet checked) and its text."""
  id: str
  source: str
  caption: str
  labels: str
  wav_S: np.ndarray


class Skipped(Exception):
  """An input that yields no record; `kind` is one of SKIP_KINDS."""

  def __init__(self, clip_id: str, source: str, reason: str, kind: str | None = None):
    self.clip_id, self.source, self.reason = clip_id, source, reason
    self.kind = kind or skip_kind(reason)
    super().__init__(f"{clip_id} ({source}): {reason}")

  def to_json(self, split: str) -> dict[str, str]:
    return {"split": split, "id": self.clip_id, "source": self.source, "kind": self.kind,
            "reason": self.reason}


def skip_kind(reason: str) -> str:
  """The SKIP_KINDS entry for an `audio.AudioError` reason or one of this module's reasons."""
  prefixes = (("no such file", "missing"), ("missing", "missing"), ("unreadable", "unreadable"),
              ("zero channels", "unreadable"), ("empty", "empty"),
              ("non-finite samples", "non-finite"), ("too short", "too short"),
              ("silent", "silent"), ("bad row", "bad row"), ("duplicate id", "duplicate id"),
              ("non-finite latents", "non-finite latents"))
  for prefix, kind in prefixes:
    if reason.startswith(prefix):
      return kind
  return "unreadable"


class InputSet(Protocol):
  """The inputs of one split, in a fixed order."""

  def __len__(self) -> int:
    ...

  def load(self, index: int, sample_rate: int) -> Clip:
    """Reads input `index` as mono at `sample_rate`; raises `Skipped` if that fails."""
    ...


class TfdsInputs:
  """The records of one split of a built TFDS dataset with almtok's clip features."""

  def __init__(self, source: Sequence[Mapping[str, Any]], name: str, split: str,
               sample_rate: int):
    self._source, self._name, self._split, self._rate = source, name, split, sample_rate

  def __len__(self) -> int:
    return len(self._source)

  def load(self, index: int, sample_rate: int) -> Clip:
    from almtok.datasets import tfds_common  # pylint: disable=g-import-not-at-top
    where = f"tfds:{self._name}/{self._split}[{index}]"
    record = self._source[index]
    clip_id = tfds_common.decode_text(record["id"])
    try:
      wav_S = audio.to_mono_at_rate(record["audio"], self._rate, sample_rate, where)
    except audio.AudioError as e:
      raise Skipped(clip_id, where, e.reason) from e
    return Clip(clip_id, where, tfds_common.decode_text(record["caption"]),
                tfds_common.decode_text(record["labels"]), wav_S)


@dataclasses.dataclass(frozen=True)
class CsvRow:
  """One row of a captions CSV and the audio file found for it (None: none found)."""
  id: str
  source: str
  caption: str
  labels: str
  path: str | None
  problem: str | None = None


class FolderInputs:
  """Rows of an AudioCaps-style CSV whose audio lies in a folder (see `almtok/prepare.py`)."""

  def __init__(self, rows: Sequence[CsvRow]):
    self.rows = list(rows)

  def __len__(self) -> int:
    return len(self.rows)

  def load(self, index: int, sample_rate: int) -> Clip:
    row = self.rows[index]
    if row.problem:
      raise Skipped(row.id, row.source, row.problem)
    if row.path is None:
      raise Skipped(row.id, row.source, "missing audio file (no <audiocap_id>.* nor "
                    "<youtube_id>.* in the audio folder)")
    try:
      wav_S = audio.load(row.path, sample_rate)
    except audio.AudioError as e:
      raise Skipped(row.id, row.path, e.reason) from e
    return Clip(row.id, row.path, row.caption, row.labels, wav_S)


def index_audio(folder: str) -> dict[str, str]:
  """File stem -> path of the audio files directly in `folder` (first extension by name)."""
  found: dict[str, str] = {}
  if not os.path.isdir(folder):
    return found
  for name in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(name)
    path = os.path.join(folder, name)
    if ext.lower() in AUDIO_EXTENSIONS and not name.startswith(".") and os.path.isfile(path):
      found.setdefault(stem, path)
  return found


def read_captions_csv(csv_path: str, audio_dir: str,
                      seen_ids: set[str] | None = None) -> FolderInputs:
  """The rows of one AudioCaps-style CSV, each matched to its audio file.

  Rows without an id or caption are kept as inputs that will be skipped ("bad row"), and so are
  ids already in `seen_ids` ("duplicate id"), which this updates.

  Raises:
    configlib.ConfigError: the file is missing or lacks the audiocap_id or caption column.
  """
  if not os.path.isfile(csv_path):
    raise configlib.ConfigError(f"captions CSV {csv_path} does not exist")
  seen_ids = set() if seen_ids is None else seen_ids
  stem = os.path.splitext(os.path.basename(csv_path))[0]
  # Files in <audio_dir>/<csv stem>/ win over files with the same stem in <audio_dir>/.
  files = {**index_audio(audio_dir), **index_audio(os.path.join(audio_dir, stem))}
  rows = []
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = {"audiocap_id", "caption"} - set(reader.fieldnames or ())
    if missing:
      raise configlib.ConfigError(f"{csv_path}: no column {sorted(missing)} in header "
                                  f"{reader.fieldnames}; expected "
                                  "audiocap_id,youtube_id,start_time,caption")
    for line, row in enumerate(reader, start=2):
      clip_id = (row.get("audiocap_id") or "").strip()
      youtube_id = (row.get("youtube_id") or "").strip()
      caption = (row.get("caption") or "").strip()
      where = f"{csv_path}:{line}"
      labels = json.dumps({"audiocap_id": clip_id, "youtube_id": youtube_id,
                           "start_time": (row.get("start_time") or "").strip()}, sort_keys=True)
      problem = None
      if not clip_id or not caption:
        problem = "bad row (no audiocap_id or no caption)"
        clip_id = clip_id or f"{stem}:{line}"
      elif clip_id in seen_ids:
        problem = f"duplicate id (audiocap_id {clip_id} appeared in an earlier row)"
      seen_ids.add(clip_id)
      path = files.get(clip_id) or (files.get(youtube_id) if youtube_id else None)
      rows.append(CsvRow(clip_id, path or where, caption, labels, path, problem))
  return FolderInputs(rows)


def list_inputs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, InputSet]:
  """Split name -> its inputs, for the dataset that `config.dataset` names."""
  dataset = config.dataset
  if dataset.name in TFDS_NAMES:
    from almtok.datasets import registry as datasets  # pylint: disable=g-import-not-at-top
    data_dir = config.data_dir or os.path.join(workdir, "tfds")
    builder = datasets.build(dataset, data_dir)
    sources = builder.as_data_source()
    rate = builder.info.features["audio"].sample_rate
    return {split: TfdsInputs(sources[split], dataset.name, split, rate)
            for split in _ordered(sources)}
  if dataset.name in FOLDER_NAMES:
    seen: set[str] = set()
    return {split: read_captions_csv(os.path.expanduser(dataset[key]),
                                     os.path.expanduser(dataset.audio_dir), seen)
            for split, key in CSV_SPLITS if dataset[key]}
  raise configlib.ConfigError(f"config.dataset.name={dataset.name!r}: must be one of {list(NAMES)}")


def _ordered(splits: Iterator[str] | Mapping[str, Any]) -> list[str]:
  known = ("train", "validation", "test")
  return sorted(splits, key=lambda s: (known.index(s) if s in known else len(known), s))
