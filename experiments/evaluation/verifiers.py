r"""Accuracy of the weight-free DSP verifiers (`almtok/evaluation/verifiers.py`, the second
judge) on real one-event clips: the synth_sounds test split, and a larger set of reference clips
that no split holds.

  python experiments/evaluation/verifiers.py --out=experiments/evaluation/verifiers.md

Per verifier: the clips whose caption asks its attribute, the fraction it reads right with a
95% bootstrap interval, and the confusions. The judge's `adherence_dsp` reads the verifiers that
reach 0.85 on the test split (`verifiers.ACCURATE`).
"""

import collections
import os
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from almtok import configlib  # noqa: E402
from almtok import fileio  # noqa: E402
from almtok.datasets import synth_generator  # noqa: E402
from almtok.evaluation import metrics  # noqa: E402
from almtok.evaluation import verifiers  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "Markdown table to write (printed as well).")
_TEST = flags.DEFINE_integer("test_clips", 200, "Clips of the test split (its size).")
_REFERENCE = flags.DEFINE_integer("reference_clips", 2000, "Reference clips.")


def accuracy(split: str, n: int) -> dict:
  hits, confusions = collections.defaultdict(list), collections.defaultdict(collections.Counter)
  for seed in synth_generator.split_seeds(split, n):
    clip = synth_generator.render_clip(seed, 4.0)
    kind, want = verifiers.asked(clip.labels)
    if not want:
      continue
    measured = verifiers.decode(verifiers.codes([clip.wav])[0])
    for name, value in want.items():
      got = verifiers.read(measured, name, kind)
      hits[name].append(got == value)
      if got != value:
        confusions[name][f"{value} read as {got}"] += 1
  return {name: (hits[name], confusions[name]) for name in verifiers.VERIFIERS}


def main(argv):
  del argv
  lines = ["| verifier | clips asked (test) | accuracy (test), 95% CI | clips asked (reference) | "
           "accuracy (reference), 95% CI | errors (reference) | used |",
           "|---|---:|---|---:|---|---|---|"]
  test, reference = accuracy("test", _TEST.value), accuracy("reference", _REFERENCE.value)
  for name in verifiers.VERIFIERS:
    cells = []
    for hits, _ in (test[name], reference[name]):
      est = metrics.mean_with_ci(np.asarray(hits, float), resamples=1000)
      cells += [str(len(hits)), f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"]
    errors = ", ".join(f"{k}: {v}" for k, v in reference[name][1].most_common()) or "none"
    used = "yes" if name in verifiers.ACCURATE else "no"
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {errors} | {used} |")
  table = "\n".join(lines) + "\n"
  print(table)
  if _OUT.value:
    header = ("# DSP verifiers on real one-event clips\n\n"
              f"`python experiments/evaluation/verifiers.py --out={_OUT.value}`: the first "
              f"{_TEST.value} synth_sounds test clips and {_REFERENCE.value} reference clips "
              "(seeds no split uses), 4 s, those of one event.\n\n")
    with fileio.atomic_write(_OUT.value, encoding="utf-8") as f:
      f.write(header + table)


if __name__ == "__main__":
  configlib.run(main)
