r"""A test of the judge itself: controlled degradations of real clips (`degrade.LADDERS`), each
rung scored by the judge's headline metrics, checked against what each metric is expected to do.

  python -m almtok.evaluation.ladder \
      --taggers=experiments/evaluation/tagger,experiments/evaluation/tagger_seed1 \
      --clap=experiments/evaluation/clap --out=experiments/evaluation/ladder

Clean clips: the first --clips synth_sounds test clips (rendered from the test split's seeds, as
the TFDS build holds them). Every rung degrades all of them; the set metrics compare the rung's
clips with --clips reference clips that no split holds (`reference.py`), the caption metrics
score each clip against its own caption (the clean clip's labels and posteriors). The `swap`
ladder keeps the audio and scores a growing fraction of clips against another caption.

`EXPECTED` says, before any run, which metric must respond to which ladder. An expected pair
passes when (1) its values from clean through the rungs, turned so that larger is worse, have
Spearman >= 0.9 against the rung index, and (2) its first rung differs from clean at 95%
(a paired bootstrap over clips: the same clips and reference clips resampled for both). Pairs not
expected are reported, not required. With two taggers (trained with different seeds) each
verdict is given per tagger, and whether they agree. With --clap the contrastive model's metrics
(`CLAP_METRICS`) are scored as well; they do not read the tagger, so both taggers' rows for them
are the same numbers.

Writes <out>/ladder.json, and <out>/ladder.md: the verdicts, every value per rung, and where
30 dB SNR hiss, a Griffin-Lim resynthesis and a clip of another caption fall on each headline
metric (the paired metrics must rank the other caption worst).

Shape letters: N clips.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from absl import flags
import numpy as np
import scipy.stats
import tqdm

from almtok import configlib
from almtok import fileio
from almtok.evaluation import clap as clap_lib
from almtok.evaluation import degrade
from almtok.evaluation import judge
from almtok.evaluation import metrics as metrics_lib
from almtok.evaluation import reference as reference_lib
from almtok.evaluation import tagger as tagger_lib

SET_METRICS = tuple(m for m in judge.HEADLINE if judge.BY_NAME[m].family == "set")
# The contrastive model's metrics (with --clap), added to the ladders after their first run.
CLAP_METRICS = ("clap_score", "clap_r1", "clap_r10")
# Which metric must respond to which ladder, written before the ladders were run. A caption
# swap leaves the audio as it is, so no set metric can see it; degraded audio with the right
# caption moves the set metrics first.
EXPECTED = {
    "noise": ("fd_tagger", "fd_inf_tagger", "kid_tagger", "fd_melstats"),
    "lowpass": ("fd_tagger", "fd_inf_tagger", "kid_tagger", "fd_melstats"),
    "griffin_lim": ("fd_tagger", "kid_tagger", "fd_melstats"),
    "shuffle": ("fd_tagger", "kl_tagger", "adherence_order"),
    "swap": ("kl_tagger", "kl_tagger_rev", "adherence_f1", "adherence_events",
             "adherence_order", "adherence_dsp",
             # Written before the contrastive metrics were first run on the ladders.
             *CLAP_METRICS),
}
SPEARMAN_MIN = 0.9
# (ladder, rung) of the common scale: a faint change, the vocoder, and the wrong caption.
LANDMARKS = {"hiss 30 dB SNR": ("noise", 30.0), "Griffin-Lim (32 it.)": ("griffin_lim", 32.0),
             "another caption": ("swap", 1.0)}


class Scorer:
  """One tagger's view of the ladders: the clean clips, their captions and the reference."""

  def __init__(self, model: tagger_lib.Tagger, meta: dict[str, Any], wavs: Sequence[np.ndarray],
               labels: Sequence[str], seconds: float, resamples: int,
               cache_dir: str | None = None, clap: tuple[Any, dict[str, Any]] | None = None,
               texts: Sequence[str] | None = None):
    """`clap`: (model, meta) of the contrastive model, with the clips' caption `texts`."""
    if clap is not None and (texts is None or len(texts) != len(wavs)):
      raise ValueError("a contrastive model needs the caption text of every clip")
    self.model, self.meta, self.resamples = model, meta, resamples
    self.clap = None if clap is None else clap[0]
    self.metric_names = judge.HEADLINE + (CLAP_METRICS if clap is not None else ())
    self.clean = self.score(wavs)
    self.captions = judge.Captions(
        list(labels), self.clean,
        None if clap is None else clap_lib.embed_captions(clap[0], clap[1], texts))
    self.ref = reference_lib.pool(model, meta, len(wavs), seconds, cache_dir)
    # Caption metrics that apply to none of the clean clips' captions are left out (e.g. R@10
    # of 10 captions or fewer).
    every = np.arange(len(wavs))
    self.metric_names = tuple(
        n for n in self.metric_names if judge.BY_NAME[n].family == "set" or not np.isnan(
            judge.per_caption(judge.BY_NAME[n].matrix(self.clean, self.captions), every)[0]
        ).all())

  def score(self, wavs: Sequence[np.ndarray]) -> judge.Scored:
    return judge.score_wavs(self.model, self.meta, wavs, dsp=True, clap=self.clap)

  def values(self, name: str, scored: judge.Scored, groups: np.ndarray
             ) -> tuple[float, Any]:
    """(the metric's value, what a paired difference needs: per-caption values or the set)."""
    metric = judge.BY_NAME[name]
    if metric.family == "set":
      return metric.scale * metric.on_sets(scored, self.ref), scored
    own, _ = judge.per_caption(metric.matrix(scored, self.captions), groups)
    return float(np.nanmean(own)), own

  def difference(self, name: str, rung: Any, clean: Any) -> metrics_lib.Estimate:
    """rung minus clean, paired: the same clips (and reference clips) resampled for both."""
    metric = judge.BY_NAME[name]
    if metric.family == "caption":
      use = ~np.isnan(rung) & ~np.isnan(clean)
      return metrics_lib.mean_with_ci(rung[use] - clean[use], resamples=self.resamples)
    n, m = len(rung), len(self.ref)
    f = lambda x, i, j: metric.scale * metric.on_sets(x.take(i), self.ref.take(j))
    diffs = [f(rung, i, j) - f(clean, i, j) for i, j in judge.draws(
        n, m, self.resamples, metric.resample_reference)]
    every, refs = np.arange(n), np.arange(m)
    return metrics_lib.centred_interval(f(rung, every, refs) - f(clean, every, refs), diffs)


def run_ladders(scorer: Scorer, wavs: Sequence[np.ndarray], ladders: Sequence[degrade.Ladder],
                metric_names: Sequence[str] | None = None, seed: int = 0,
                degraded: dict[tuple[str, float], list[np.ndarray]] | None = None
                ) -> dict[str, Any]:
  """Every ladder's values per rung and its verdicts, for one tagger (every metric the scorer
  has unless `metric_names`). `degraded` keeps each rung's audio for the next tagger."""
  degraded = {} if degraded is None else degraded
  metric_names = scorer.metric_names if metric_names is None else metric_names
  n = len(wavs)
  own = np.arange(n)
  clean = {name: scorer.values(name, scorer.clean, own) for name in metric_names}
  out = {}
  for ladder in ladders:
    values = {name: [clean[name][0]] for name in metric_names}
    first = {}
    for k, rung in enumerate(tqdm.tqdm(ladder.rungs, desc=f"ladder {ladder.name}", unit="rung",
                                       disable=None)):
      if ladder.apply is None:   # Clean audio scored against swapped captions.
        scored, groups = scorer.clean, degrade.swap_captions(n, rung, seed)
      else:
        key = (ladder.name, rung)
        if key not in degraded:
          degraded[key] = ladder.apply(wavs, rung, seed)
        scored, groups = scorer.score(degraded[key]), own
      for name in metric_names:
        value, paired = scorer.values(name, scored, groups)
        values[name].append(value)
        if k == 0:
          first[name] = scorer.difference(name, paired, clean[name][1])
    verdicts = {}
    for name in metric_names:
      worse = np.asarray(values[name]) * (-1.0 if judge.BY_NAME[name].higher_is_better else 1.0)
      # A metric that does not move at all has no rank correlation: 0.
      rho = (float(scipy.stats.spearmanr(np.arange(worse.size), worse)[0])
             if np.ptp(worse) > 0 else 0.0)
      d = first[name]
      toward_worse = d.value * (-1.0 if judge.BY_NAME[name].higher_is_better else 1.0) > 0
      separates = bool((d.low > 0 or d.high < 0) and toward_worse)
      verdicts[name] = dict(expected=name in EXPECTED.get(ladder.name, ()),
                            spearman=rho,
                            first_rung=d.to_json(), separates=separates,
                            passes=bool(np.isfinite(rho) and rho >= SPEARMAN_MIN and separates))
    out[ladder.name] = dict(unit=ladder.unit, rungs=list(ladder.rungs), values=values,
                            verdicts=verdicts)
  return out


def markdown(results: dict[str, Any]) -> str:
  taggers = results["taggers"]
  per = results["per_tagger"]
  lines = [f"# The judge's ladders: {results['clips']} synth_sounds test clips of "
           f"{results['seconds']:g} s", "",
           f"Command: `{results['command']}`", "",
           "Taggers: " + ", ".join(f"{t} ({per[t]['steps']} steps, seed {per[t]['seed']})"
                                   for t in taggers) + ".", "",
           "An expected pair passes when Spearman(rung, value turned so that larger is worse) "
           f">= {SPEARMAN_MIN} over clean and the rungs, and its first rung differs from clean "
           f"at 95% toward worse (paired bootstrap, {results['resamples']} resamples). "
           "Expectations (`ladder.EXPECTED`) were committed before the first run.", "",
           "## Verdicts", "",
           "| ladder | metric | expected | " + " | ".join(
               f"tagger {i + 1}: Spearman, first rung, passes" for i in range(len(taggers)))
           + " | taggers agree |", "|---|---|---|" + "---|" * len(taggers) + "---|"]
  first = per[taggers[0]]["ladders"]
  for ladder, body in first.items():
    for name in body["verdicts"]:
      cells, passes = [], []
      for t in taggers:
        v = per[t]["ladders"][ladder]["verdicts"][name]
        d = v["first_rung"]
        cells.append(f"{v['spearman']:+.2f}, {d['value']:+.3g} [{d['low']:+.3g}, "
                     f"{d['high']:+.3g}], **{'pass' if v['passes'] else 'fail'}**")
        passes.append(v["passes"])
      expected = body["verdicts"][name]["expected"]
      lines.append(f"| {ladder} | {name} | {'yes' if expected else 'no'} | "
                   + " | ".join(cells) + f" | {'yes' if len(set(passes)) == 1 else 'no'} |")
  summary = []
  for t in taggers:
    pairs = [v for body in per[t]["ladders"].values() for v in body["verdicts"].values()
             if v["expected"]]
    summary.append(f"tagger {t}: {sum(v['passes'] for v in pairs)} of {len(pairs)} expected "
                   "pairs pass")
  lines += ["", "; ".join(summary) + ".", "", "## One scale", "",
            "Each headline metric at three landmarks (tagger 1), beside clean; the caption "
            "metrics should rank another caption worst.", "",
            "| metric | clean | " + " | ".join(LANDMARKS) + " | another caption worst |",
            "|---|---:|" + "---:|" * len(LANDMARKS) + "---|"]
  for name in first[next(iter(first))]["values"]:
    row = []
    for ladder, rung in LANDMARKS.values():
      body = first.get(ladder)
      row.append(body["values"][name][1 + body["rungs"].index(rung)]
                 if body and rung in body["rungs"] else float("nan"))
    clean = first[next(iter(first))]["values"][name][0]
    sign = -1.0 if judge.BY_NAME[name].higher_is_better else 1.0
    worst = (judge.BY_NAME[name].family == "caption"
             and all(sign * row[-1] > sign * v for v in row[:-1]))
    verdict = ("yes" if worst else "no") if judge.BY_NAME[name].family == "caption" else "-"
    lines.append(f"| {name} | {clean:.4g} | " + " | ".join(f"{v:.4g}" for v in row)
                 + f" | {verdict} |")
  lines += ["", "## Values per rung (tagger 1)", ""]
  for ladder, body in first.items():
    lines += [f"### {ladder} ({body['unit']})", "",
              "| metric | clean | " + " | ".join(f"{r:g}" for r in body["rungs"]) + " |",
              "|---|" + "---:|" * (1 + len(body["rungs"]))]
    for name, vals in body["values"].items():
      lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in vals) + " |")
    lines.append("")
  return "\n".join(lines)


_TAGGERS = flags.DEFINE_list("taggers", None, "One or two exported taggers (train_tagger).")
_OUT = flags.DEFINE_string("out", None, "Output folder (ladder.json, ladder.md).")
_CLIPS = flags.DEFINE_integer("clips", 200, "Clean test clips (and reference clips).")
_SECONDS = flags.DEFINE_float("seconds", 4.0, "Clip length.")
_RESAMPLES = flags.DEFINE_integer("resamples", 200, "Bootstrap resamples of each difference.")
_LADDERS = flags.DEFINE_list("ladders", [l.name for l in degrade.LADDERS], "Ladders to run.")
_CACHE = flags.DEFINE_string("reference_cache", None, "Cache of the reference clips' scores.")
_CLAP = flags.DEFINE_string("clap", None, "An exported contrastive model (train_clap): its "
                            "metrics join the ladders.")


def main(argv):
  import sys  # pylint: disable=g-import-not-at-top
  del argv
  if not _TAGGERS.value or not _OUT.value:
    raise configlib.ConfigError("--taggers and --out are required")
  unknown = [l for l in _LADDERS.value if l not in degrade.BY_NAME]
  if unknown:
    raise configlib.ConfigError(f"--ladders: unknown {unknown[0]!r}; have {list(degrade.BY_NAME)}")
  ladders = [degrade.BY_NAME[l] for l in _LADDERS.value]
  wavs, labels, texts = reference_lib.render(_CLIPS.value, _SECONDS.value, split="test")
  try:
    clap = clap_lib.load(_CLAP.value) if _CLAP.value else None
  except FileNotFoundError:
    raise configlib.ConfigError(f"--clap={_CLAP.value}: no contrastive model there (train one "
                                "with python -m almtok.evaluation.train_clap)") from None
  per, degraded = {}, {}
  for path in _TAGGERS.value:
    model, meta = tagger_lib.load(path)
    scorer = Scorer(model, meta, wavs, labels, _SECONDS.value, _RESAMPLES.value, _CACHE.value,
                    clap, texts)
    per[path] = dict(steps=meta.get("trained_steps"), seed=meta.get("seed"),
                     sha256=meta.get("weights_sha256"),
                     ladders=run_ladders(scorer, wavs, ladders, degraded=degraded))
  results = dict(command="python -m almtok.evaluation.ladder " + " ".join(sys.argv[1:]),
                 clips=_CLIPS.value, seconds=_SECONDS.value, resamples=_RESAMPLES.value,
                 taggers=list(_TAGGERS.value), clap=_CLAP.value or None,
                 clap_sha256=None if clap is None else clap[1].get("weights_sha256"),
                 expected=EXPECTED, per_tagger=per)
  os.makedirs(_OUT.value, exist_ok=True)
  fileio.atomic_json(os.path.join(_OUT.value, "ladder.json"), results, indent=1)
  with fileio.atomic_write(os.path.join(_OUT.value, "ladder.md"), encoding="utf-8") as f:
    f.write(markdown(results))
  print(markdown(results))


if __name__ == "__main__":
  configlib.run(main)
