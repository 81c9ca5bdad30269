"""TFDS builder `synth_sounds`: the embedded synthetic captioned sounds (see `synth_generator.py`).

Each builder config fixes clip length, sample rate, split sizes and the base seed, and its name
encodes them, so builds with different settings live side by side in one data_dir.
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow_datasets as tfds

from almtok.datasets import synth_generator
from almtok.datasets import tfds_common

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class SynthSoundsConfig(tfds.core.BuilderConfig):
  seconds: float = 4.0
  sample_rate: int = 16_000
  num_train: int = 2000
  num_validation: int = 200
  num_test: int = 200
  seed: int = 0


def make_config(seconds: float = 4.0, sample_rate: int = 16_000, num_train: int = 2000,
                num_validation: int = 200, num_test: int = 200,
                seed: int = 0) -> SynthSoundsConfig:
  """A builder config whose name encodes its settings."""
  name = (f"s{seconds:g}_sr{sample_rate}_n{num_train}-{num_validation}-{num_test}"
          f"_seed{seed}").replace(".", "p")
  return SynthSoundsConfig(name=name, seconds=seconds, sample_rate=sample_rate,
                           num_train=num_train, num_validation=num_validation,
                           num_test=num_test, seed=seed)


class SynthSounds(tfds.core.GeneratorBasedBuilder):
  """Synthetic captioned sounds: tones, chords, chirps, noise and rhythms, 1-3 events a clip."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [make_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds_common.clip_features(self.builder_config.sample_rate),
        homepage="",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, sizes[split]) for split in SPLITS}

  def _generate_examples(self, split: str, size: int):
    cfg = self.builder_config
    for clip in synth_generator.generate(split, size, seconds=cfg.seconds,
                                   sample_rate=cfg.sample_rate, base_seed=cfg.seed):
      key = f"{split}-{clip.seed}"
      yield key, {
          "audio": clip.wav,
          "caption": clip.caption,
          "labels": json.dumps(clip.labels, sort_keys=True),
          "id": key,
          "seconds": clip.wav.shape[0] / cfg.sample_rate,
      }
