r"""Builds a raw-audio dataset offline (TFDS, ArrayRecord) and shows what is in it.

  python -m almtok.build_data --config=configs/synth_sounds.py --workdir=/tmp/synth

Writes <workdir>/overview/: a few example WAVs, their spectrograms in one PNG with the captions
as titles, and summary.json (split sizes, hours of audio, kinds of events); prints the same.
"""

from __future__ import annotations

import collections
import json
import os

from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from almtok import audio
from almtok import configlib
from almtok import fileio
from almtok import plotting
from almtok.datasets import registry as datasets
from almtok.datasets import tfds_common



def check_config(config) -> None:
  configlib.validate(config, choices={"dataset.name": datasets.NAMES})
  if config.show.split not in ("train", "validation", "test"):
    raise configlib.ConfigError(f"config.show.split={config.show.split!r}: must be one of "
                                "['train', 'validation', 'test']")


def summarise(sources: dict, dataset_name: str) -> dict:
  """Split sizes, hours, and a count of label categories read from each record's labels."""
  summary = {"dataset": dataset_name, "splits": {}}
  for split, source in sources.items():
    seconds, kinds = 0.0, collections.Counter()
    for i in range(len(source)):
      record = source[i]
      seconds += float(record["seconds"])
      labels = json.loads(tfds_common.decode_text(record["labels"]))
      for event in labels.get("events", [labels]):
        kinds[event.get("kind") or event.get("category") or "?"] += 1
    summary["splits"][split] = {"clips": len(source), "hours": round(seconds / 3600, 3),
                                "label_counts": dict(kinds.most_common())}
  return summary


def show(config, workdir: str) -> dict:
  """Builds the dataset, writes the overview and returns the summary."""
  data_dir = config.data_dir or os.path.join(workdir, "tfds")
  builder = datasets.build(config.dataset, data_dir)
  sources = builder.as_data_source()
  summary = summarise(sources, config.dataset.name)
  out_dir = os.path.join(workdir, "overview")
  os.makedirs(out_dir, exist_ok=True)
  source = sources[config.show.split]
  n = min(config.show.num_examples, len(source))
  wavs, captions = [], []
  for i in range(n):
    record = source[i]
    wav = np.asarray(record["audio"], np.float32)
    caption = tfds_common.decode_text(record["caption"])
    audio.write(os.path.join(out_dir, f"{config.show.split}_{i}.wav"), wav,
                config.dataset.sample_rate)
    wavs.append(wav)
    captions.append(caption)
  summary["examples"] = captions
  if wavs:
    summary["spectrograms"] = plotting.spectrogram_grid(
        os.path.join(out_dir, "spectrograms.png"), wavs, captions, config.dataset.sample_rate)
  fileio.atomic_json(os.path.join(out_dir, "summary.json"), summary, indent=2)
  summary["data_dir"] = builder.data_dir
  return summary


def print_summary(summary: dict) -> None:
  print(f"dataset {summary['dataset']} at {summary['data_dir']}")
  for split, s in summary["splits"].items():
    top = ", ".join(f"{k} {v}" for k, v in list(s["label_counts"].items())[:8])
    print(f"  {split:<10} {s['clips']:>6} clips  {s['hours']:>7.3f} h   {top}")
  for caption in summary["examples"]:
    print(f"  example: {caption}")
  if "spectrograms" in summary:
    print(f"  spectrograms: {summary['spectrograms']}")


def main(argv):
  del argv
  config = flags.FLAGS.config
  check_config(config)
  if not flags.FLAGS.workdir:
    raise configlib.ConfigError("--workdir is required")
  logging.set_verbosity(logging.WARNING)
  print_summary(show(config, flags.FLAGS.workdir))


if __name__ == "__main__":
  # Flags are defined only when run as a program, so tests can import several entry points.
  config_flags.DEFINE_config_file("config", None, "Dataset config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.mark_flags_as_required(["config"])
  configlib.run(main)
