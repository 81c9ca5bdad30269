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

from absl import flags

from almtok import configlib
from almtok import events
from almtok import plotting

_WORKDIR = flags.DEFINE_string("workdir", None, "the trainer's --workdir", required=True)
_OUT = flags.DEFINE_string("out", None, "output path without extension", required=True)
_TAGS = flags.DEFINE_list("tags", ["loss", "ntp_loss", "mntp_loss", "val/loss", "grad_norm",
                                   "tokens_per_s"], "scalars shown in the table")
_ROWS = flags.DEFINE_integer("rows", 8, "logged steps shown in the table")


def main(argv):
  del argv
  if not glob.glob(os.path.join(_WORKDIR.value, "events.out.tfevents.*")):
    raise configlib.FatalError(f"--workdir={_WORKDIR.value}: no TensorBoard event files there")
  scalars = events.scalars(events.read_events(_WORKDIR.value))
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
