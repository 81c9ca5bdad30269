"""Exits 0 if the training run in WORKDIR has saved its last step (`train.num_steps`), else 1.

  python experiments/launch/run_finished.py /mnt/almtok/runs/cont_base

The launch scripts use it to decide whether a stopped job (preempted, or at its time limit)
must start again; the trainer itself resumes from the newest checkpoint.
"""

import json
import os
import sys


def main() -> int:
  workdir = sys.argv[1]
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      num_steps = json.load(f)["train"]["num_steps"]
    saved = [int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()]
  except (OSError, KeyError, ValueError):
    return 1
  return 0 if saved and max(saved) >= num_steps else 1


if __name__ == "__main__":
  sys.exit(main())
