"""Real recorded sounds from three Debian packages: finding the files, splits and clips.

The clips come from packages that install sample libraries as plain audio files:

  sonic-pi-samples  /usr/share/sonic-pi/samples/<prefix>_<words>.flac
  lmms-common       /usr/share/lmms/samples/<category folder>/<words>NN.ogg|wav|flac
  hydrogen-data     /usr/share/hydrogen/data/drumkits/<kit>/<Words>-<Velocity>.wav|flac

Each file's caption and labels come from its name (`debian_captions`). Splits are fixed per clip
by a hash of its id, so adding files never moves existing ones.

This module needs only numpy and soundfile; the TFDS builder `debian_sounds` around it lives in
`debian_sounds.py`. Shape letters: S samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from almtok import audio
from almtok.datasets import debian_captions as captions
from almtok.datasets.debian_captions import HYDROGEN, LMMS, SONIC_PI

PACKAGES = (SONIC_PI, LMMS, HYDROGEN)

DEFAULT_ROOTS: Mapping[str, str] = {
    SONIC_PI: "/usr/share/sonic-pi/samples",
    LMMS: "/usr/share/lmms/samples",
    HYDROGEN: "/usr/share/hydrogen/data/drumkits",
}

AUDIO_EXTENSIONS = (".flac", ".ogg", ".wav")

# Shorter files are skipped: less than one analysis window of the mel features (25 ms). Here
# that drops the single-cycle oscillator shapes of lmms (2-18 ms) and one 19 ms click.
MIN_SECONDS = audio.WIN_LENGTH / audio.SAMPLE_RATE

# Percent of clips per split; a clip's split depends only on its own id.
SPLIT_PERCENT = (("train", 80), ("validation", 10), ("test", 10))


def apt_command(packages: Sequence[str] = PACKAGES) -> str:
  """The command that installs `packages`."""
  return "sudo apt-get install " + " ".join(packages)


class MissingPackagesError(FileNotFoundError):
  """Some of the Debian packages the dataset reads are not installed."""

  def __init__(self, missing: Sequence[str], roots: Mapping[str, str]):
    self.missing = tuple(missing)
    where = ", ".join(f"{p} ({roots[p]})" for p in self.missing)
    super().__init__(
        f"debian_sounds reads sample libraries installed by Debian packages; missing: {where}. "
        f"Install them with: {apt_command(self.missing)}")


# ---------------------------------------------------------------------------------------------
# Sources and splits.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoundSource:
  """One audio file of one package, with the caption and labels derived from its name."""
  path: str
  package: str
  category: str
  caption: str
  labels: dict[str, Any]
  id: str

  @property
  def split(self) -> str:
    return split_of(self.id)


def make_source(package: str, root: str, relpath: str) -> SoundSource:
  """The source for the file `relpath` under `root`; its id is "<package>/<relpath>"."""
  relpath = relpath.replace(os.sep, "/")
  d = captions.describe(package, relpath)
  path = os.path.join(root, relpath)
  labels = {"package": package, "category": d.category, "instrument": d.instrument,
            "source_file": path, "tokens": list(d.tokens)}
  return SoundSource(path=path, package=package, category=d.category, caption=d.caption,
                     labels=labels, id=f"{package}/{relpath}")


def _audio_files(root: str) -> Iterator[str]:
  """Relative paths of audio files under `root`, in sorted order at every level."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      if name.lower().endswith(AUDIO_EXTENSIONS):
        yield os.path.relpath(os.path.join(dirpath, name), root)


def scan_sources(roots: Mapping[str, str] | None = None) -> list[SoundSource]:
  """Every audio file under the packages' roots, by package then path.

  `roots` maps package name -> directory (default `DEFAULT_ROOTS`); packages whose directory
  does not exist are left out (see `missing_packages`).
  """
  roots = DEFAULT_ROOTS if roots is None else roots
  sources = []
  for package in sorted(roots, key=_package_order):
    if os.path.isdir(roots[package]):
      sources += [make_source(package, roots[package], rel) for rel in _audio_files(roots[package])]
  return sources


def missing_packages(roots: Mapping[str, str] | None = None) -> list[str]:
  """Packages whose root holds no audio file."""
  roots = DEFAULT_ROOTS if roots is None else roots
  return [p for p in sorted(roots, key=_package_order)
          if not os.path.isdir(roots[p]) or next(_audio_files(roots[p]), None) is None]


def require_packages(roots: Mapping[str, str] | None = None) -> None:
  """Raises `MissingPackagesError` (naming the apt command) unless every package is present."""
  roots = DEFAULT_ROOTS if roots is None else roots
  missing = missing_packages(roots)
  if missing:
    raise MissingPackagesError(missing, roots)


def split_of(clip_id: str) -> str:
  """'train', 'validation' or 'test', fixed by a hash of the id alone."""
  bucket = int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "big") % 100
  for name, percent in SPLIT_PERCENT:
    if bucket < percent:
      return name
    bucket -= percent
  raise AssertionError("SPLIT_PERCENT must sum to 100")


def subset(sources: Sequence[SoundSource], max_files: int | None) -> list[SoundSource]:
  """At most `max_files` per package, evenly spaced in name order (so categories stay mixed)."""
  if max_files is None:
    return list(sources)
  kept = []
  for package in PACKAGES + tuple(sorted({s.package for s in sources} - set(PACKAGES))):
    group = [s for s in sources if s.package == package]
    k = min(max_files, len(group))
    kept += [group[i * len(group) // k] for i in range(k)]
  return kept


def _package_order(package: str) -> tuple[int, str]:
  return (PACKAGES.index(package) if package in PACKAGES else len(PACKAGES), package)


# ---------------------------------------------------------------------------------------------
# Clips.
# ---------------------------------------------------------------------------------------------


def load_clip(path: str, *, sample_rate: int = audio.SAMPLE_RATE, max_seconds: float = 10.0,
              min_seconds: float = MIN_SECONDS, silence_db: float = -60.0) -> np.ndarray:
  """Mono float32 waveform (S) at `sample_rate`, cut to its first `max_seconds`.

  Raises:
    audio.AudioError: the file cannot be read, is shorter than `min_seconds` (single-cycle
      oscillator shapes), or its peak stays at or below `silence_db` dBFS. `reason` says which.
  """
  wav_S = audio.load(path, sample_rate)
  seconds = wav_S.size / sample_rate
  if seconds < min_seconds:
    raise audio.AudioError(path, f"too short ({seconds:.3f} s < {min_seconds} s)")
  wav_S = wav_S[:int(round(max_seconds * sample_rate))]
  peak = audio.peak(wav_S)
  if peak <= 10.0 ** (silence_db / 20.0):
    level = 20.0 * np.log10(peak) if peak > 0 else float("-inf")
    raise audio.AudioError(path, f"silent (peak {level:.1f} dBFS <= {silence_db} dBFS)")
  return wav_S


def labels_json(source: SoundSource) -> str:
  """The `labels` feature: the source's labels as JSON with sorted keys."""
  return json.dumps(source.labels, sort_keys=True)
