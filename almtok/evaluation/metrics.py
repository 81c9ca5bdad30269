"""Distribution and per-clip metrics of generated audio, with bootstrap confidence intervals.

Every metric is computed on an embedding or a classifier that its name says: `fd_tagger` is the
Fréchet distance on almtok's own tagger embedding, never VGGish FAD. The functions here take
arrays (numpy, float64 inside) and know nothing of audio models:

  frechet_distance   between Gaussian fits of two sets of embeddings [N, E]
  frechet_distance_inf  FD extrapolated to infinitely many clips (FD against 1/N, as fadtk)
  kernel_distance    KID: unbiased MMD² with the cubic polynomial kernel (x·y / E + 1)³; for
                     paired sets (clip i of one made for the caption of clip i of the other)
                     without the pairs' own terms
  set_scores         per clip, precision, recall and F1 of a detected set against an asked one
  mismatched_f1      per clip, the F1 of its detected set against every other clip's asked set
  bernoulli_kl       per-class KL(p || q) of independent Bernoulli posteriors (multi-label heads)
  categorical_kl     KL(p || q) of softmax posteriors (single-label heads)
  kl_matrix          either KL for every pair of rows (floors over mismatched captions)
  inception_score    exp(E_x KL(p(y|x) || p(y))) over one softmax head
  melstats           an embedding almtok does not train: per-band mean and std of the log-mel

`bootstrap` resamples clips with replacement and gives a percentile interval of the resampled
values centred on the full-sample value (their mean shifted to it): repeated clips in a resample
inflate FD and KID, and the centring removes that bias, so that the interval is about the value
it goes with. A mean has no such bias: `mean_with_ci` keeps the plain percentile interval,
which stays within the range of the values it averages (a fraction's within [0, 1]).
`paired_bootstrap` resamples the same clips for two runs and gives the interval of their
difference.

Shape letters: N clips, E embedding width, K classes, M mel bands, F frames, R resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

import numpy as np

_EPS = 1e-6   # Probabilities are clipped to [EPS, 1 - EPS] before a log.


def _psd_sqrt(a_ExE: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric positive semi-definite matrix, by eigh, with
  eigenvalues that rounding pushed below zero set to zero."""
  w_E, v_ExE = np.linalg.eigh((a_ExE + a_ExE.T) / 2.0)
  return (v_ExE * np.sqrt(np.clip(w_E, 0.0, None))[None, :]) @ v_ExE.T


def gaussian(x_NxE: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased) covariance of embeddings, float64."""
  x_NxE = np.asarray(x_NxE, np.float64)
  if x_NxE.ndim != 2 or x_NxE.shape[0] < 2:
    raise ValueError(f"need at least 2 embeddings [N, E], got shape {x_NxE.shape}")
  return x_NxE.mean(axis=0), np.cov(x_NxE, rowvar=False).reshape(x_NxE.shape[1],
                                                                  x_NxE.shape[1])


def frechet_from_moments(mu1_E, cov1_ExE, mu2_E, cov2_ExE) -> float:
  """|mu1 - mu2|² + tr(C1 + C2 - 2 (C1^½ C2 C1^½)^½), in float64.

  The cross term uses symmetric PSD square roots (eigh), which stay real and finite when the
  covariances are near-singular (more dimensions than clips), where the usual `sqrtm(C1 C2)` of
  a non-symmetric product returns complex noise.
  """
  mu1_E, mu2_E = np.asarray(mu1_E, np.float64), np.asarray(mu2_E, np.float64)
  s1_ExE = _psd_sqrt(np.asarray(cov1_ExE, np.float64))
  cross_ExE = s1_ExE @ np.asarray(cov2_ExE, np.float64) @ s1_ExE
  w_E = np.clip(np.linalg.eigvalsh((cross_ExE + cross_ExE.T) / 2.0), 0.0, None)
  diff_E = mu1_E - mu2_E
  value = (diff_E @ diff_E + np.trace(cov1_ExE) + np.trace(cov2_ExE)
           - 2.0 * np.sum(np.sqrt(w_E)))
  return float(max(value, 0.0))


def frechet_distance(x_NxE: np.ndarray, y_NxE: np.ndarray) -> float:
  """Fréchet distance between Gaussian fits of two sets of embeddings."""
  return frechet_from_moments(*gaussian(x_NxE), *gaussian(y_NxE))


def frechet_distance_inf(x_NxE: np.ndarray, y_MxE: np.ndarray, *, points: int = 8,
                         min_clips: int | None = None, seed: int = 0) -> tuple[float, float]:
  """(FD-inf, slope): FD between random subsets of N clips of each set at `points` sizes from
  `min_clips` (default a quarter of the smaller set) to all of it, fitted by least squares as
  FD(N) = FD-inf + slope / N. FD's finite-sample bias falls as 1/N, so the intercept is the
  distance that no number of clips would change (as fadtk extrapolates FAD)."""
  x_NxE, y_MxE = np.asarray(x_NxE, np.float64), np.asarray(y_MxE, np.float64)
  most = min(len(x_NxE), len(y_MxE))
  least = min_clips or max(2, most // 4)
  if most < 2 or least >= most:
    raise ValueError(f"FD-inf needs subsets of at least 2 clips and more than {least}, got {most}")
  rng = np.random.default_rng(seed)
  sizes = np.unique(np.linspace(least, most, points).astype(int))
  fds = [frechet_distance(x_NxE[rng.choice(len(x_NxE), n, replace=False)],
                          y_MxE[rng.choice(len(y_MxE), n, replace=False)]) for n in sizes]
  slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
  return float(intercept), float(slope)


def kernel_distance(x_NxE: np.ndarray, y_NxE: np.ndarray, paired: bool = False) -> float:
  """KID: the unbiased estimate of MMD² with the kernel k(a, b) = (a·b / E + 1)³.

  With `paired` (the sets are the same size and x_i goes with y_i, e.g. a clip and its
  resynthesis, or clips made for the same caption) the cross term leaves out the pairs' own
  k(x_i, y_i), which the estimator assumes independent: with them in, near-copies score below
  zero by the pairs' similarity.
  """
  x_NxE, y_NxE = np.asarray(x_NxE, np.float64), np.asarray(y_NxE, np.float64)
  n, m, e = x_NxE.shape[0], y_NxE.shape[0], x_NxE.shape[1]
  if n < 2 or m < 2:
    raise ValueError(f"KID needs at least 2 clips per set, got {n} and {m}")
  if paired and n != m:
    raise ValueError(f"paired KID needs sets of one size, got {n} and {m}")
  kernel = lambda a, b: (a @ b.T / e + 1.0) ** 3
  k_xx, k_yy, k_xy = kernel(x_NxE, x_NxE), kernel(y_NxE, y_NxE), kernel(x_NxE, y_NxE)
  cross = (k_xy.sum() - np.trace(k_xy)) / (n * (n - 1)) if paired else k_xy.mean()
  return float((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
               + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2.0 * cross)


def _f1(hits: np.ndarray, found_plus_asked: np.ndarray) -> np.ndarray:
  """F1 = 2 |D ∩ A| / (|D| + |A|) of detected and asked sets, 0 where they share nothing."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(hits > 0, 2.0 * hits / found_plus_asked, 0.0)


def set_scores(detected_NxK: np.ndarray, asked_NxK: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per clip, (precision, recall, F1) [N] of the detected set of classes against the asked
  set (boolean [N, K] each): recall counts what was asked and found, precision what was found
  and asked, so a clip that triggers every class no longer scores 1. NaN where nothing is
  asked; where something is asked and nothing found, precision (and F1) is 0."""
  d, a = np.asarray(detected_NxK, bool), np.asarray(asked_NxK, bool)
  hit_N = np.sum(d & a, axis=-1).astype(np.float64)
  found_N, asked_N = d.sum(-1).astype(np.float64), a.sum(-1).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(found_N > 0, hit_N / found_N, 0.0)
    recall = hit_N / asked_N
  f1 = _f1(hit_N, found_N + asked_N)
  none = asked_N == 0
  return (np.where(none, np.nan, precision), np.where(none, np.nan, recall),
          np.where(none, np.nan, f1))


def mismatched_f1(detected_NxK: np.ndarray, asked_NxK: np.ndarray) -> np.ndarray:
  """Per clip i, the mean F1 of its detected set against the asked set of every other clip j
  that asks something [N]: what adherence is for a clip that answers some other caption (a
  floor over all mismatched pairs, not one shuffle). NaN for a clip with no such j."""
  d, a = np.asarray(detected_NxK, np.float64), np.asarray(asked_NxK, np.float64)
  f1_NxN = _f1(d @ a.T, d.sum(-1)[:, None] + a.sum(-1)[None, :])
  use_NxN = (a.sum(-1)[None, :] > 0) & ~np.eye(len(d), dtype=bool)
  count_N = use_NxN.sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count_N > 0, np.sum(f1_NxN * use_NxN, -1) / count_N, np.nan)


def bernoulli_kl(p_NxK: np.ndarray, q_NxK: np.ndarray) -> np.ndarray:
  """Per clip, the sum over classes of KL(Bernoulli(p) || Bernoulli(q)): [N]."""
  p = np.clip(np.asarray(p_NxK, np.float64), _EPS, 1.0 - _EPS)
  q = np.clip(np.asarray(q_NxK, np.float64), _EPS, 1.0 - _EPS)
  return np.sum(p * np.log(p / q) + (1.0 - p) * np.log((1.0 - p) / (1.0 - q)), axis=-1)


def categorical_kl(p_NxK: np.ndarray, q_NxK: np.ndarray) -> np.ndarray:
  """Per clip, KL(p || q) of two categorical distributions over the last axis: [N]."""
  p = np.clip(np.asarray(p_NxK, np.float64), _EPS, 1.0)
  q = np.clip(np.asarray(q_NxK, np.float64), _EPS, 1.0)
  p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
  return np.sum(p * np.log(p / q), axis=-1)


def kl_matrix(p_NxK: np.ndarray, q_MxK: np.ndarray, bernoulli: bool) -> np.ndarray:
  """KL(p_i || q_j) for every pair [N, M]: per-class Bernoulli KLs summed (`bernoulli`) or the
  categorical KL; its diagonal is `bernoulli_kl` / `categorical_kl` of the paired rows."""
  p = np.clip(np.asarray(p_NxK, np.float64), _EPS, 1.0 - _EPS if bernoulli else 1.0)
  q = np.clip(np.asarray(q_MxK, np.float64), _EPS, 1.0 - _EPS if bernoulli else 1.0)
  if not bernoulli:
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    return np.sum(p * np.log(p), -1)[:, None] - p @ np.log(q).T
  self_N = np.sum(p * np.log(p) + (1.0 - p) * np.log(1.0 - p), -1)
  return self_N[:, None] - p @ np.log(q).T - (1.0 - p) @ np.log(1.0 - q).T


def inception_score(p_NxK: np.ndarray) -> float:
  """exp(mean over clips of KL(p(y|x) || p(y))), p(y) the mean posterior: 1 when every clip
  gets the same prediction, K when each is certain and the classes are used evenly."""
  p_NxK = np.asarray(p_NxK, np.float64)
  marginal_K = p_NxK.mean(axis=0, keepdims=True)
  return float(np.exp(np.mean(categorical_kl(p_NxK, np.broadcast_to(marginal_K, p_NxK.shape)))))


def melstats(log_mel_MxF: np.ndarray) -> np.ndarray:
  """Per-band mean and standard deviation over time of a log-mel (dB): [2M], float64."""
  x = np.asarray(log_mel_MxF, np.float64)
  return np.concatenate([x.mean(axis=1), x.std(axis=1)])


# ---------------------------------------------------------------------------------------------
# Confidence intervals.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A metric's value on all clips and the percentile interval of its bootstrap resamples."""
  value: float
  low: float
  high: float
  resamples: int

  def to_json(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def bootstrap(metric: Callable[[np.ndarray], float], n: int, *, resamples: int = 1000,
              level: float = 0.95, seed: int = 0) -> Estimate:
  """`metric(indices)` on all n clips, and its `level` interval over `resamples` draws of n clip
  indices with replacement (the same indices for every set the metric pairs), centred."""
  rng = np.random.default_rng(seed)
  values = [metric(rng.integers(0, n, size=n)) for _ in range(resamples)]
  return _interval(float(metric(np.arange(n))), values, level, resamples)


def _interval(value: float, values: Sequence[float], level: float, resamples: int) -> Estimate:
  """The `level` percentile interval of `values` centred on `value` (see the module docstring)."""
  values = np.asarray(values, np.float64)
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(values - values.mean(), [tail, 100.0 - tail]) + value
  return Estimate(value, float(low), float(high), resamples)


def unpaired_bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], n: int, m: int, *,
                       resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Estimate:
  """As `bootstrap` for two sets that are not paired (n and m clips): `metric(idx_n, idx_m)`
  over independent resamples of each."""
  rng = np.random.default_rng(seed)
  values = [metric(rng.integers(0, n, size=n), rng.integers(0, m, size=m))
            for _ in range(resamples)]
  return _interval(float(metric(np.arange(n), np.arange(m))), values, level, resamples)


def paired_bootstrap(metric_a: Callable[[np.ndarray], float],
                     metric_b: Callable[[np.ndarray], float], n: int, **kwargs) -> Estimate:
  """The difference a - b of one metric for two runs on the same n captions, resampling the
  same captions for both: an interval that excludes 0 says the runs differ at that level."""
  return bootstrap(lambda idx: metric_a(idx) - metric_b(idx), n, **kwargs)


def mean_with_ci(values_N: Sequence[float], *, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> Estimate:
  """The mean of per-clip values with the plain percentile interval of its bootstrap resamples
  (a mean is unbiased, so nothing is centred): the interval stays within the values' range."""
  values_N = np.asarray(values_N, np.float64)
  rng = np.random.default_rng(seed)
  means = [float(values_N[rng.integers(0, values_N.size, size=values_N.size)].mean())
           for _ in range(resamples)]
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(means, [tail, 100.0 - tail])
  return Estimate(float(values_N.mean()), float(low), float(high), resamples)
