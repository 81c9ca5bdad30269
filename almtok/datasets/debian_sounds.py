"""TFDS builder `debian_sounds`: the captioned sample libraries of three Debian packages.

Scanning, splits and clip loading live in `debian_catalog.py`, captions in `debian_captions.py`
(no TensorFlow in either).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import dataclasses
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from almtok import audio
from almtok.datasets import tfds_common
from almtok.datasets.debian_catalog import (MIN_SECONDS, PACKAGES, SPLIT_PERCENT, DEFAULT_ROOTS,
                                        SoundSource, labels_json, load_clip, require_packages,
                                        scan_sources, subset)


@dataclasses.dataclass(eq=False)
class DebianSoundsConfig(tfds.core.BuilderConfig):
  """How clips are cut and filtered.

  max_seconds: longer files (loops) keep their first `max_seconds`.
  min_seconds, silence_db: shorter or quieter files are skipped with a warning.
  max_files: per package, for quick builds (evenly spaced in name order; None: all).
  """
  sample_rate: int = audio.SAMPLE_RATE
  max_seconds: float = 10.0
  min_seconds: float = MIN_SECONDS
  silence_db: float = -60.0
  max_files: int | None = None

class DebianSounds(tfds.core.GeneratorBasedBuilder):
  """Sample libraries of sonic-pi-samples, lmms-common and hydrogen-data, captioned."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [DebianSoundsConfig(name="default")]

  def __init__(self, *, roots: Mapping[str, str] | None = None, **kwargs: Any):
    """`roots` (package -> directory) reads another copy; give it its own `data_dir`."""
    self._roots = dict(DEFAULT_ROOTS if roots is None else roots)
    super().__init__(**kwargs)
    self._original_state["roots"] = roots  # So that a pickled builder comes back the same.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Recorded drums, instruments, effects and loops from the Debian packages "
                     f"{', '.join(PACKAGES)}, captioned from their file names."),
        features=tfds_common.clip_features(self.builder_config.sample_rate),
        homepage="",
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict]]]:
    del dl_manager  # Everything is on local disk.
    require_packages(self._roots)
    config = self.builder_config
    # Clips are loaded up front (about 50 MB at 16 kHz for all three packages) so that a split
    # whose files were all skipped is left out: TFDS refuses to write an empty split.
    clips = {name: [] for name, _ in SPLIT_PERCENT}
    for source in subset(scan_sources(self._roots), config.max_files):
      try:
        wav_S = load_clip(source.path, sample_rate=config.sample_rate,
                          max_seconds=config.max_seconds, min_seconds=config.min_seconds,
                          silence_db=config.silence_db)
      except audio.AudioError as e:
        logging.warning("debian_sounds: skipping %s: %s", e.source, e.reason)
        continue
      clips[source.split].append((source, wav_S))
    return {name: self._generate_examples(group) for name, group in clips.items() if group}

  def _generate_examples(
      self, clips: Sequence[tuple[SoundSource, np.ndarray]]) -> Iterator[tuple[str, dict]]:
    for source, wav_S in clips:
      yield source.id, {
          "audio": wav_S,
          "caption": source.caption,
          "labels": labels_json(source),
          "id": source.id,
          "seconds": np.float32(wav_S.size / self.builder_config.sample_rate),
      }

