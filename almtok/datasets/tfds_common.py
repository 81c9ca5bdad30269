"""What almtok's TFDS builders share: the clip features, and building offline to ArrayRecord.

Every raw-audio dataset almtok builds (`synth_sounds`, `debian_sounds`, user builders) yields the
same features, so that `prepare` reads them all the same way:

  audio    float32 mono waveform at the builder's sample rate
  caption  text
  labels   JSON text with the dataset's structured labels
  id       text, unique within the dataset
  seconds  float32 duration

Importing this module imports TensorFlow (TFDS needs it to build); GPUs are hidden from it so
that it never takes accelerator memory from JAX.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

tf.config.set_visible_devices([], "GPU")

def clip_features(sample_rate: int) -> tfds.features.FeaturesDict:
  """The features every almtok audio builder yields."""
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Audio(shape=(None,), dtype=np.float32, sample_rate=sample_rate),
      "caption": tfds.features.Text(),
      "labels": tfds.features.Text(),
      "id": tfds.features.Text(),
      "seconds": tfds.features.Scalar(dtype=np.float32),
  })


def build(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  """Builds `builder` offline as ArrayRecord (a no-op when it is already built)."""
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(try_download_gcs=False),
  )
  return builder


def decode_text(value: Any) -> str:
  """TFDS data sources return Text features as bytes."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
