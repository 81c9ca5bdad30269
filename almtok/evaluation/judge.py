"""The judge: one registry of metrics, each with its embedding, its direction and what it
means, and the estimates (values, floors, intervals) that scoring, `--compare` and the ladders
read from it.

Two families:

  set metrics      compare a set of clips with a reference set through an embedding and ignore
                   captions (FD, FD-inf, KID, class frequencies; precision and recall tell
                   fidelity from diversity). Each comes with its noise
                   floor at the same size: a disjoint set of real clips against the same
                   reference (what no model can beat), and those real clips resynthesised (what
                   the tokenizer and vocoder alone cost).
  caption metrics  score each clip against a caption: a [clips, captions] matrix whose entry
                   (i, j) scores clip i against caption j (its labels, or its real clip's
                   posteriors). A clip's own caption gives the value; every other caption gives
                   the floor (what a clip earns that answers some other caption), so the
                   headline is the gap to that floor. Real clips against their own captions give
                   the ceiling.

Clips come in groups, one per caption (several generated clips per caption); intervals resample
captions with all their clips (95% bootstrap: percentile of the resampled means for means,
which stays within a bounded metric's range; centred percentile for FD and KID, whose resamples
are biased by repeated clips).

Embeddings: the tagger's pre-logits z-scored with the mean and std of its training clips'
(stored with the tagger), so that FD and KID do not scale with its arbitrary width; and
`melstats`, per-band mean and std of the log-mel on the tagger's perceptual floor, an embedding
nobody trained.

Shape letters: N clips, C captions, E embedding width, K classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import json
from typing import Any
import warnings

import numpy as np

from almtok import audio
from almtok.datasets import synth_scenes
from almtok.evaluation import clap as clap_lib
from almtok.evaluation import metrics as metrics_lib
from almtok.evaluation import tagger as tagger_lib
from almtok.evaluation import verifiers


# ---------------------------------------------------------------------------------------------
# What the tagger and the log-mel say about a set of clips.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Scored:
  """Per clip: the z-scored tagger embedding, the posteriors per head, the log-mel stats, and
  (when asked) what the DSP verifiers measured (`verifiers.codes`, from the waveforms) and the
  contrastive model's joint-space vector (`clap.embed_mels`)."""
  embedding_NxE: np.ndarray
  posteriors: dict[str, np.ndarray]
  melstats_NxE: np.ndarray
  dsp_NxV: np.ndarray | None = None
  clap_NxP: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.embedding_NxE)

  def _optional(self) -> dict[str, np.ndarray | None]:
    return {f: getattr(self, f) for f in _OPTIONAL.values()}

  def take(self, index: np.ndarray) -> Scored:
    return Scored(self.embedding_NxE[index], {k: v[index] for k, v in self.posteriors.items()},
                  self.melstats_NxE[index],
                  **{f: None if v is None else v[index] for f, v in self._optional().items()})

  @classmethod
  def concat(cls, parts: Sequence[Scored]) -> Scored:
    optional = {}
    for f in _OPTIONAL.values():
      values = [getattr(p, f) for p in parts]
      optional[f] = None if any(v is None for v in values) else np.concatenate(values)
    return cls(np.concatenate([p.embedding_NxE for p in parts]),
               {k: np.concatenate([p.posteriors[k] for p in parts]) for k in parts[0].posteriors},
               np.concatenate([p.melstats_NxE for p in parts]), **optional)

  def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
    optional = {f"{prefix}_{suffix}": getattr(self, f) for suffix, f in _OPTIONAL.items()
                if getattr(self, f) is not None}
    return {f"{prefix}_embedding": self.embedding_NxE, f"{prefix}_melstats": self.melstats_NxE,
            **{f"{prefix}_post_{k}": v for k, v in self.posteriors.items()}, **optional}

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> Scored:
    post = {k[len(prefix) + 6:]: v for k, v in arrays.items() if k.startswith(f"{prefix}_post_")}
    return cls(arrays[f"{prefix}_embedding"], post, arrays[f"{prefix}_melstats"],
               **{f: arrays.get(f"{prefix}_{suffix}") for suffix, f in _OPTIONAL.items()})


# Scored's optional per-clip arrays: the suffix each is stored under -> its field.
_OPTIONAL = {"dsp": "dsp_NxV", "clap": "clap_NxP"}


def score(model: tagger_lib.Tagger, meta: Mapping[str, Any], mels: Sequence[np.ndarray],
          wavs: Sequence[np.ndarray] | None = None, clap: clap_lib.Clap | None = None
          ) -> Scored:
  """What the tagger (and its stored normalization and floor) says about log-mels [M, F], the
  DSP verifiers about the waveforms, if given, and the contrastive model, if given."""
  frames = max(m.shape[1] for m in mels)
  mel_NxMxF = np.full((len(mels), audio.N_MELS, frames), tagger_lib.FLOOR_DB, np.float32)
  for i, m in enumerate(mels):
    mel_NxMxF[i, :, :m.shape[1]] = m
  frames_N = np.asarray([m.shape[1] for m in mels], np.int32)
  emb, post = tagger_lib.predict(model, mel_NxMxF, frames_N)
  emb = emb.astype(np.float64)
  if "embedding_mean" in meta:
    emb = (emb - np.asarray(meta["embedding_mean"])) / np.asarray(meta["embedding_std"])
  floor = meta.get("model", {}).get("floor_db")
  floored = (lambda m: m) if floor is None else (
      lambda m: tagger_lib.soft_floor(m.astype(np.float64), floor))
  return Scored(emb, post, np.stack([metrics_lib.melstats(floored(m)) for m in mels]),
                None if wavs is None else verifiers.codes(wavs),
                None if clap is None else clap_lib.embed_mels(clap, mels))


def score_wavs(model: tagger_lib.Tagger, meta: Mapping[str, Any], wavs: Sequence[np.ndarray],
               dsp: bool = False, chunk: int = 256, clap: clap_lib.Clap | None = None
               ) -> Scored:
  """`score` of waveforms (the verifiers' too with `dsp`, the contrastive model's with `clap`),
  a chunk of log-mels at a time."""
  return Scored.concat([
      score(model, meta, [audio.log_mel(w) for w in wavs[i:i + chunk]],
            wavs[i:i + chunk] if dsp else None, clap) for i in range(0, len(wavs), chunk)])


# ---------------------------------------------------------------------------------------------
# Caption metrics: [clips, captions] matrices.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Captions:
  """The captions clips are scored against: their labels (JSON), their real clips' scores, and
  (for the contrastive metrics) their texts' joint-space vectors [C, P]."""
  labels: list[str]
  real: Scored
  clap_CxP: np.ndarray | None = None


def _head_columns() -> dict[str, slice]:
  """Each multi-label head's columns in the attribute sets (`detected_attributes`)."""
  heads = [h for h in tagger_lib.HEADS if h.kind == "multi"]
  ends = np.cumsum([len(h.classes) for h in heads])
  return {h.name: slice(int(e) - len(h.classes), int(e)) for h, e in zip(heads, ends)}


def detected_attributes(posteriors: Mapping[str, np.ndarray]) -> np.ndarray:
  """[N, A] boolean over every (attribute, value) pair of the multi-label heads: what the tagger
  finds in each clip (posterior >= 0.5)."""
  return np.concatenate([posteriors[name] >= 0.5 for name in _head_columns()], axis=1)


def asked_attributes(labels: Sequence[str]) -> np.ndarray:
  """[C, A] boolean: the (attribute, value) pairs each caption's labels ask for."""
  columns = _head_columns()
  asked = np.zeros((len(labels), max(c.stop for c in columns.values())), bool)
  for i, text in enumerate(labels):
    for head, value in tagger_lib.attributes(json.loads(text)):
      asked[i, columns[head].start + tagger_lib.HEAD_BY_NAME[head].classes.index(value)] = True
  return asked


def _f1_matrix(detected_NxA: np.ndarray, asked_CxA: np.ndarray, what: str) -> np.ndarray:
  """Precision, recall or F1 of each clip's detected set against each caption's asked set
  [N, C]; NaN where the caption asks nothing."""
  d, a = detected_NxA.astype(np.float64), asked_CxA.astype(np.float64)
  hits, found, asked = d @ a.T, d.sum(-1)[:, None], a.sum(-1)[None, :]
  with np.errstate(invalid="ignore", divide="ignore"):
    if what == "precision":
      out = np.where(found > 0, hits / found, 0.0)
    elif what == "recall":
      out = hits / asked
    else:
      out = np.where(hits > 0, 2.0 * hits / (found + asked), 0.0)
  return np.where(asked > 0, out, np.nan)


def adherence_matrix(what: str, head: str | None = None):
  """Adherence `what` (precision, recall, f1) over every attribute, or one head's."""
  def matrix(clips: Scored, captions: Captions) -> np.ndarray:
    d, a = detected_attributes(clips.posteriors), asked_attributes(captions.labels)
    if head is not None:
      d, a = d[:, _head_columns()[head]], a[:, _head_columns()[head]]
    return _f1_matrix(d, a, what)
  return matrix


def _events(labels_json: str) -> list[dict[str, Any]]:
  return sorted(json.loads(labels_json).get("events", []), key=lambda e: e["start_s"])


def events_matrix(clips: Scored, captions: Captions) -> np.ndarray:
  """1 where the tagger's most likely number of events (1, 2, 3) is the caption's, else 0."""
  found_N = np.argmax(clips.posteriors["num_events"], -1) + 1
  asked_C = np.asarray([min(len(_events(l)), 3) or -1 for l in captions.labels])
  return np.where(asked_C[None, :] > 0, (found_N[:, None] == asked_C[None, :]).astype(float),
                  np.nan)


def order_matrix(clips: Scored, captions: Captions) -> np.ndarray:
  """For captions of two or more events of different kinds (where order can be wrong): 1 where
  the tagger's most likely first kind is the caption's first event's, else 0; NaN for the other
  captions. The tagger sees the first kind only, so this checks the order of the first two
  kinds, not the binding of attributes to events."""
  found_N = np.argmax(clips.posteriors["first_kind"], -1)
  asked_C = []
  for text in captions.labels:
    kinds = [e["kind"] for e in _events(text)]
    ordered = len(kinds) >= 2 and len(set(kinds)) >= 2
    asked_C.append(synth_scenes.KINDS.index(kinds[0]) if ordered else -1)
  asked_C = np.asarray(asked_C)
  return np.where(asked_C[None, :] >= 0, (found_N[:, None] == asked_C[None, :]).astype(float),
                  np.nan)


def kl_matrix(reverse: bool):
  """KL(real clip j || clip i) (`reverse`: KL(clip i || real clip j)), summed over the synth
  heads: per-class Bernoulli KLs of the multi-label heads plus the softmax KL of num_events and
  first_kind [N, C]."""
  def matrix(clips: Scored, captions: Captions) -> np.ndarray:
    total = 0.0
    for head in map(tagger_lib.HEAD_BY_NAME.get, tagger_lib.SYNTH_HEADS):
      g, r = clips.posteriors[head.name], captions.real.posteriors[head.name]
      multi = head.kind == "multi"
      total = total + (metrics_lib.kl_matrix(g, r, bernoulli=multi) if reverse
                       else metrics_lib.kl_matrix(r, g, bernoulli=multi).T)
    return np.asarray(total)
  return matrix


def dsp_matrix(clips: Scored, captions: Captions) -> np.ndarray:
  """For one-event captions, the fraction of the attributes they ask that the accurate DSP
  verifiers (`verifiers.ACCURATE`) read in the clip [N, C]; NaN for other captions, and
  everywhere for clips scored without their waveforms."""
  out = np.full((len(clips), len(captions.labels)), np.nan)
  if clips.dsp_NxV is None:
    return out
  measured = [verifiers.decode(c) for c in clips.dsp_NxV]
  for j, text in enumerate(captions.labels):
    kind, want = verifiers.asked(json.loads(text))
    want = {k: v for k, v in want.items() if k in verifiers.ACCURATE}
    if want:
      out[:, j] = [np.mean([verifiers.read(m, k, kind) == v for k, v in want.items()])
                   for m in measured]
  return out


def _cosines(clips: Scored, captions: Captions) -> np.ndarray | None:
  """[N, C], or None without the contrastive model's vectors."""
  if clips.clap_NxP is None or captions.clap_CxP is None:
    return None
  return clips.clap_NxP.astype(np.float64) @ captions.clap_CxP.astype(np.float64).T


def clap_matrix(clips: Scored, captions: Captions) -> np.ndarray:
  """The contrastive model's cosine of each clip with each caption [N, C]; NaN everywhere
  without its vectors."""
  cosine_NxC = _cosines(clips, captions)
  return (np.full((len(clips), len(captions.labels)), np.nan) if cosine_NxC is None
          else cosine_NxC)


def retrieval_matrix(k: int):
  """1 where caption j is among the k captions closest to clip i (ties take the best place),
  else 0 [N, C]: a clip's own entry is its R@k, the mean over the other captions about
  k / C (chance). NaN everywhere without the model's vectors or with k captions or fewer (every
  caption would be among the k)."""
  def matrix(clips: Scored, captions: Captions) -> np.ndarray:
    cosine_NxC = _cosines(clips, captions)
    if cosine_NxC is None or cosine_NxC.shape[1] <= k:
      return np.full((len(clips), len(captions.labels)), np.nan)
    return (clap_lib.ranks(cosine_NxC) < k).astype(np.float64)
  return matrix


# ---------------------------------------------------------------------------------------------
# Set metrics.
# ---------------------------------------------------------------------------------------------


def class_tv(x: Scored, y: Scored) -> float:
  """Total variation between the two sets' predicted class frequencies, averaged over the synth
  heads: per head, the mean posterior over clips normalised to a distribution over its
  classes. 0 when the sets use every class as often; 1 when they share none."""
  tv = []
  for name in tagger_lib.SYNTH_HEADS:
    p = x.posteriors[name].astype(np.float64).mean(0)
    q = y.posteriors[name].astype(np.float64).mean(0)
    tv.append(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
  return float(np.mean(tv))


def _fd_inf(x: np.ndarray, y: np.ndarray) -> float:
  return metrics_lib.frechet_distance_inf(x, y)[0]


# ---------------------------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Metric:
  """name -> how to compute it, on what, and which way is better.

  A set metric has `on_sets(x, y) -> float`; a caption metric has `matrix(clips, captions)`
  [N, C] (NaN where a caption does not apply). `scale` multiplies what is reported (KID x 1e3),
  `min_clips` is the fewest clips per set it is computed on, `bounds` its range (which its
  interval keeps to), `resample_reference` False for k-NN metrics (a reference clip drawn twice
  would shrink its neighbours' radii to 0), and `fraction` asks for the adherence-style fraction
  of the range between floor and ceiling."""
  name: str
  embedding: str
  higher_is_better: bool
  description: str
  on_sets: Callable[[Scored, Scored], float] | None = None
  matrix: Callable[[Scored, Captions], np.ndarray] | None = None
  scale: float = 1.0
  min_clips: int = 2
  bounds: tuple[float, float] | None = None
  resample_reference: bool = True
  fraction: bool = False

  @property
  def family(self) -> str:
    return "set" if self.on_sets is not None else "caption"


TAGGER_EMBEDDING = "almtok tagger embedding, z-scored by its training clips' (not VGGish)"
MELSTATS = "per-band log-mel mean and std on the tagger's floor (untrained)"
POSTERIORS = "almtok tagger posteriors"
DSP = "weight-free DSP verifiers (the second judge; no tagger)"
CLAP = "almtok contrastive model (CLAP-style, trained here; not LAION-CLAP; no tagger)"

METRICS: tuple[Metric, ...] = (
    Metric("fd_tagger", TAGGER_EMBEDDING, False, "Fréchet distance",
           on_sets=lambda x, y: metrics_lib.frechet_distance(x.embedding_NxE, y.embedding_NxE)),
    Metric("fd_inf_tagger", TAGGER_EMBEDDING, False,
           "Fréchet distance extrapolated to infinitely many clips (FD against 1/N)",
           on_sets=lambda x, y: _fd_inf(x.embedding_NxE, y.embedding_NxE), min_clips=8),
    Metric("kid_tagger", TAGGER_EMBEDDING, False,
           "kernel inception distance x 1e3, cubic kernel (x.y / E + 1)^3",
           on_sets=lambda x, y: metrics_lib.kernel_distance(x.embedding_NxE, y.embedding_NxE),
           scale=1e3),
    Metric("fd_melstats", MELSTATS, False, "Fréchet distance",
           on_sets=lambda x, y: metrics_lib.frechet_distance(x.melstats_NxE, y.melstats_NxE)),
    Metric("class_tv_tagger", POSTERIORS, False,
           "total variation of predicted class frequencies, mean over heads (replaces IS)",
           on_sets=class_tv, bounds=(0.0, 1.0)),
    Metric("precision_tagger", TAGGER_EMBEDDING, True,
           "fidelity: the fraction of clips inside the reference's 5-NN manifold",
           on_sets=lambda x, y: metrics_lib.manifold_precision(x.embedding_NxE, y.embedding_NxE),
           min_clips=6, bounds=(0.0, 1.0), resample_reference=False),
    Metric("recall_tagger", TAGGER_EMBEDDING, True,
           "diversity: the fraction of reference clips inside the clips' 5-NN manifold",
           on_sets=lambda x, y: metrics_lib.manifold_precision(y.embedding_NxE, x.embedding_NxE),
           min_clips=6, bounds=(0.0, 1.0), resample_reference=False),
    Metric("kl_tagger", POSTERIORS, False,
           "KL(real clip || clip) of the caption's real clip, summed over heads",
           matrix=kl_matrix(reverse=False)),
    Metric("kl_tagger_rev", POSTERIORS, False,
           "KL(clip || real clip) of the caption's real clip, summed over heads",
           matrix=kl_matrix(reverse=True)),
    Metric("adherence_f1", POSTERIORS, True,
           "F1 of the attributes found (posterior >= 0.5) against those the caption asks",
           matrix=adherence_matrix("f1"), fraction=True),
    Metric("adherence_precision", POSTERIORS, True, "precision of the attributes found",
           matrix=adherence_matrix("precision"), fraction=True),
    Metric("adherence_recall", POSTERIORS, True, "recall of the attributes asked",
           matrix=adherence_matrix("recall"), fraction=True),
    *(Metric(f"adherence_f1_{h}", POSTERIORS, True, f"F1 of the {h} asked",
             matrix=adherence_matrix("f1", h), fraction=True) for h in _head_columns()),
    Metric("adherence_events", POSTERIORS, True,
           "the most likely number of events is the caption's", matrix=events_matrix,
           fraction=True),
    Metric("adherence_order", POSTERIORS, True,
           "captions of 2+ kinds: the first kind found is the caption's first",
           matrix=order_matrix, fraction=True),
    Metric("adherence_dsp", DSP, True,
           "one-event captions: the fraction of register, direction, colour, tempo and "
           "envelope asked that the verifiers read (ceiling: the real clips)",
           matrix=dsp_matrix, fraction=True),
    Metric("clap_score", CLAP, True, "cosine of the clip with the caption's text",
           matrix=clap_matrix, fraction=True),
    Metric("clap_r1", CLAP, True, "the caption is the clip's closest among the captions "
           "scored (floor: about 1 / captions)", matrix=retrieval_matrix(1), fraction=True),
    Metric("clap_r10", CLAP, True, "the caption is among the clip's 10 closest (floor: about "
           "10 / captions)", matrix=retrieval_matrix(10), fraction=True),
)
BY_NAME = {m.name: m for m in METRICS}
# The metrics the ladders test and the README's quality table gives.
HEADLINE = ("fd_tagger", "fd_inf_tagger", "kid_tagger", "fd_melstats", "class_tv_tagger",
            "precision_tagger", "recall_tagger", "kl_tagger", "kl_tagger_rev", "adherence_f1",
            "adherence_events", "adherence_order", "adherence_dsp")


def select(names: Sequence[str] | None) -> tuple[Metric, ...]:
  """The registry's metrics named (all when None); ValueError naming an unknown one."""
  if names is None:
    return METRICS
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    raise ValueError(f"unknown metric {unknown[0]!r}; the registry has {list(BY_NAME)}")
  return tuple(BY_NAME[n] for n in names)


# ---------------------------------------------------------------------------------------------
# Estimates.
# ---------------------------------------------------------------------------------------------


def members(groups_N: np.ndarray) -> list[np.ndarray]:
  """The clips of each group (caption) 0 .. max: [indices] per group."""
  groups_N = np.asarray(groups_N)
  order = np.argsort(groups_N, kind="stable")
  bounds = np.searchsorted(groups_N[order], np.arange(groups_N.max() + 2))
  return [order[bounds[g]:bounds[g + 1]] for g in range(groups_N.max() + 1)]


def expand(groups: Sequence[np.ndarray], chosen: np.ndarray) -> np.ndarray:
  """The clips of the chosen groups, with repeats."""
  return np.concatenate([groups[g] for g in chosen])


def draws(num_groups: int, num_ref: int, count: int, resample_reference: bool = True,
          seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """`count` bootstrap draws of (groups, reference clips), each with replacement; the reference
  kept whole when not `resample_reference`."""
  rng = np.random.default_rng(seed)
  for _ in range(count):
    chosen = rng.integers(0, num_groups, num_groups)
    yield chosen, (rng.integers(0, num_ref, num_ref) if resample_reference
                   else np.arange(num_ref))


def interval(metric: Metric, value: float, values: Sequence[float]) -> metrics_lib.Estimate:
  """The centred interval of a set metric's resampled values, kept within its range."""
  est = metrics_lib.centred_interval(value, values)
  if metric.bounds is None:
    return est
  lo, hi = metric.bounds
  return dataclasses.replace(est, low=float(np.clip(est.low, lo, hi)),
                             high=float(np.clip(est.high, lo, hi)))


def set_estimate(metric: Metric, x: Scored, x_groups: np.ndarray, y: Scored, *,
                 resamples: int, seed: int = 0) -> metrics_lib.Estimate:
  """`metric` of set x (clips grouped by caption) against reference y, with an interval that
  resamples x's captions and y's clips independently (centred: see the module docstring)."""
  groups = members(x_groups)
  f = lambda xi, yi: metric.scale * metric.on_sets(x.take(xi), y.take(yi))
  values = [f(expand(groups, g), r) for g, r in draws(
      len(groups), len(y), resamples, metric.resample_reference, seed)]
  return interval(metric, f(np.arange(len(x)), np.arange(len(y))), values)


def per_caption(matrix_NxC: np.ndarray, groups_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(own, other) [C]: per caption, the mean over its clips of their entry for it, and of their
  mean entry over every other caption (NaN entries left out)."""
  n, c = matrix_NxC.shape
  own_N = matrix_NxC[np.arange(n), groups_N]
  off_NxC = matrix_NxC.copy()
  off_NxC[np.arange(n), groups_N] = np.nan
  with warnings.catch_warnings():   # All-NaN rows are expected (captions a metric skips).
    warnings.simplefilter("ignore", RuntimeWarning)
    other_N = np.nanmean(off_NxC, axis=1)
    groups = members(groups_N)
    own = np.asarray([np.nanmean(own_N[m]) if m.size else np.nan for m in groups])
    other = np.asarray([np.nanmean(other_N[m]) if m.size else np.nan for m in groups])
  return own, other


def caption_estimates(metric: Metric, clips: Scored, groups_N: np.ndarray, captions: Captions,
                      *, resamples: int, ceiling: Scored | None = None
                      ) -> dict[str, metrics_lib.Estimate]:
  """Nothing when no caption applies; otherwise: value (clips against their own captions),
  floor (against every other caption), gap (value beyond the floor, oriented so that larger is
  better), ceiling (`ceiling`'s clips, one per caption in caption order, against their own;
  the captions' real clips for a metric that reads what `ceiling` lacks, as DSP on waveforms),
  and fraction ((value - floor) / (ceiling - floor), for metrics that ask for it). Captions
  resampled together for all of them; captions that the metric does not apply to left out."""
  own, other = per_caption(metric.matrix(clips, captions), groups_N)
  use = ~np.isnan(own) & ~np.isnan(other)
  if not use.any():
    return {}   # No caption it applies to (e.g. no caption of two kinds for adherence_order).
  sign = 1.0 if metric.higher_is_better else -1.0
  out = {"value": metrics_lib.mean_with_ci(own[use], resamples=resamples),
         "floor": metrics_lib.mean_with_ci(other[use], resamples=resamples),
         "gap": metrics_lib.mean_with_ci(sign * (own[use] - other[use]), resamples=resamples)}
  best = None
  for top in (ceiling, captions.real):   # The real clips where the ceiling's lack what it reads.
    if top is not None and best is None:
      best, _ = per_caption(metric.matrix(top, captions), np.arange(len(top)))
      best = None if np.isnan(best[use]).any() else best
  if best is not None:
    out["ceiling"] = metrics_lib.mean_with_ci(best[use], resamples=resamples)
    if metric.fraction:
      g, f, c = own[use], other[use], best[use]

      def fraction(i):
        span = c[i].mean() - f[i].mean()
        return float((g[i].mean() - f[i].mean()) / span) if span else np.nan

      out["fraction"] = metrics_lib.bootstrap(fraction, g.size, resamples=resamples)
  return out
