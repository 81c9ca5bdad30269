"""Reading back the TensorBoard event files that the trainers' clu writers leave in a workdir.

Through tensorboard's own reader, as TensorBoard itself would see them: clu writes TF2 summaries,
which come back as tensors (scalars as 0-d arrays, audio as [clips, 2] string arrays).
"""

from __future__ import annotations

import glob
import os
from typing import NamedTuple

import numpy as np


class Events(NamedTuple):
  values: dict[str, list[tuple[int, np.ndarray]]]   # tag -> (step, value) in the order written
  plugins: dict[str, str]                            # tag -> plugin ("scalars", "audio", ...)


def read_events(path: str) -> Events:
  """The summaries of one event file, or of every event file in a directory (by file name)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  paths = (sorted(glob.glob(os.path.join(path, "events.out.tfevents.*")))
           if os.path.isdir(path) else [path])
  values, plugins = {}, {}
  for file in paths:
    acc = event_accumulator.EventAccumulator(file, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      values.setdefault(tag, []).extend(
          (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag))
      plugins[tag] = acc.SummaryMetadata(tag).plugin_data.plugin_name
  return Events(values, plugins)


def scalars(events: Events) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of the float scalar summaries."""
  return {tag: {step: float(v) for step, v in pairs}
          for tag, pairs in events.values.items()
          if all(v.ndim == 0 and v.dtype.kind == "f" for _, v in pairs)}
