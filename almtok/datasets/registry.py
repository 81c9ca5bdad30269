"""Raw-audio datasets by name: the TFDS builders that a config's `dataset.name` selects."""

from __future__ import annotations

import os

import ml_collections
import tensorflow_datasets as tfds

from almtok.datasets import tfds_common

NAMES = ("synth_sounds", "debian_sounds")


def get_builder(dataset: ml_collections.ConfigDict, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder that `dataset` (a config's `dataset` block) names, rooted at `data_dir`."""
  data_dir = os.path.expanduser(data_dir)
  if dataset.name == "synth_sounds":
    from almtok.datasets import synth_sounds  # pylint: disable=g-import-not-at-top
    config = synth_sounds.make_config(
        seconds=dataset.seconds, sample_rate=dataset.sample_rate, num_train=dataset.num_train,
        num_validation=dataset.num_validation, num_test=dataset.num_test, seed=dataset.seed)
    # TFDS wants the class's own object when the settings are those of a predefined config.
    predefined = {c.name: c for c in synth_sounds.SynthSounds.BUILDER_CONFIGS}
    return synth_sounds.SynthSounds(config=predefined.get(config.name, config),
                                    data_dir=data_dir)
  if dataset.name == "debian_sounds":
    from almtok.datasets import debian_sounds  # pylint: disable=g-import-not-at-top
    config = debian_sounds.DebianSoundsConfig(
        name=f"sr{dataset.sample_rate}_max{dataset.max_seconds:g}".replace(".", "p"),
        sample_rate=dataset.sample_rate, max_seconds=dataset.max_seconds)
    return debian_sounds.DebianSounds(config=config, data_dir=data_dir)
  raise ValueError(f"dataset.name={dataset.name!r}: must be one of {list(NAMES)}")


def build(dataset: ml_collections.ConfigDict, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds the named dataset offline as ArrayRecord (a no-op when already built)."""
  return tfds_common.build(get_builder(dataset, data_dir))
