r"""Loss curves of a training run, read back from its TensorBoard event files.

  python experiments/training/curves.py --workdir=/tmp/lm --out=experiments/training/small_2min

Reads every scalar the trainer wrote to `--workdir` (tensorboard's own event reader), prints a
table of the chosen tags at evenly spaced logged steps, and writes `<out>.png` (the loss and its
NTP / MNTP parts against the step, validation loss as points) and `<out>.json` (all scalars).
"""

from __future__ import annotations

import glob
import json
import os

from absl import app
from absl import flags

from almtok import configlib
from almtok import plotting

_WORKDIR = flags.DEFINE_string("workdir", None, "the trainer's --workdir", required=True)
_OUT = flags.DEFINE_string("out", None, "output path without extension", required=True)
_TAGS = flags.DEFINE_list("tags", ["loss", "ntp_loss", "mntp_loss", "val/loss", "grad_norm",
                                   "tokens_per_s"], "scalars shown in the table")
_ROWS = flags.DEFINE_integer("rows", 8, "logged steps shown in the table")


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} over the event files of `workdir` (not its subfolders)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  if not paths:
    raise configlib.FatalError(f"--workdir={workdir}: no TensorBoard event files there")
  scalars: dict[str, dict[int, float]] = {}
  for path in paths:
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      for event in acc.Tensors(tag):
        value = tensor_util.make_ndarray(event.tensor_proto)
        if value.ndim == 0 and value.dtype.kind == "f":
          scalars.setdefault(tag, {})[event.step] = float(value)
  return scalars


def main(argv):
  del argv
  scalars = read_scalars(_WORKDIR.value)
  if "loss" not in scalars:
    raise configlib.FatalError(f"--workdir={_WORKDIR.value}: the event files hold no 'loss'")
  tags = [t for t in _TAGS.value if t in scalars]
  steps = sorted(scalars["loss"])
  shown = sorted({steps[round(i * (len(steps) - 1) / max(_ROWS.value - 1, 1))]
                  for i in range(_ROWS.value)})
  print(f"{'step':>6}" + "".join(f"{t:>14}" for t in tags))
  for step in shown:
    cells = "".join(f"{scalars[t][step]:>14.4g}" if step in scalars[t] else f"{'-':>14}"
                    for t in tags)
    print(f"{step:>6}{cells}")

  curves = {tag: (sorted(scalars[tag]), [scalars[tag][s] for s in sorted(scalars[tag])])
            for tag in ("loss", "ntp_loss", "mntp_loss", "val/loss") if tag in scalars}
  png = plotting.curves_png(f"{_OUT.value}.png", curves,
                            title=os.path.basename(os.path.normpath(_WORKDIR.value)))
  with open(f"{_OUT.value}.json", "w") as f:
    json.dump(scalars, f, indent=1)
  print(f"wrote {png} and {_OUT.value}.json")


if __name__ == "__main__":
  configlib.run(main)
