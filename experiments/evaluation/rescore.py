r"""Scores a finished evaluation again with the current metrics, from its stored per-clip scores
(scores.npz, clips.json: the tagger's embeddings and posteriors of the generated and the real
clips, and the captions' labels), without generating or tagging anything again.

  python experiments/evaluation/rescore.py --out=experiments/evaluation/demo
  python experiments/evaluation/rescore.py --out=experiments/evaluation/demo_discrete

Writes <out>/rescored.json and <out>/rescored.md: the distribution metrics of the generated
against the real clips, KL in both directions with its floor (each generated clip against every
other caption's reference), and adherence (precision, recall, F1) with its ceiling (the real
clips) and its floor (each generated clip against every other caption). The
resynthesised references are not stored with the scores, so their rows are not here.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from almtok import configlib  # noqa: E402
from almtok import evaluate  # noqa: E402
from almtok import fileio  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "An `almtok.evaluate --out` folder.", required=True)
_RESAMPLES = flags.DEFINE_integer("resamples", 1000, "Bootstrap resamples.")


def rescore(out: str, resamples: int) -> dict:
  gen, real, clips = evaluate.load_scores(out)
  labels = clips["labels"]
  rows = {"generated vs real": evaluate.distribution_metrics(gen, real, resamples)}
  for row, values in evaluate.caption_metrics(gen, real, labels, resamples).items():
    rows.setdefault(row, {}).update(values)
  rows = {k: {m: e.to_json() for m, e in v.items()} for k, v in rows.items()}
  return dict(workdir=f"{out} (stored scores)", split="stored", clips=len(labels),
              tagger=f"weights sha256 {clips.get('tagger_sha256')}", resamples=resamples,
              embeddings=evaluate.EMBEDDINGS, rows=rows)


def main(argv):
  del argv
  results = rescore(_OUT.value, _RESAMPLES.value)
  fileio.atomic_json(os.path.join(_OUT.value, "rescored.json"), results, indent=1)
  with fileio.atomic_write(os.path.join(_OUT.value, "rescored.md"), encoding="utf-8") as f:
    f.write(evaluate.markdown(results))
  print(evaluate.markdown(results))


if __name__ == "__main__":
  configlib.run(main)
