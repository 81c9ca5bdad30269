"""Distribution and per-clip metrics of generated audio, with bootstrap confidence intervals.

Every metric is computed on an embedding or a classifier that its name says: `fd_tagger` is the
Fréchet distance on almtok's own tagger embedding, never VGGish FAD. The functions here take
arrays (numpy, float64 inside) and know nothing of audio models:

  frechet_distance   between Gaussian fits of two sets of embeddings [N, E]
  frechet_distance_inf  FD extrapolated to infinitely many clips (FD against 1/N, as fadtk)
  kernel_distance    KID: unbiased MMD² with the cubic polynomial kernel (x·y / E + 1)³; for
                     paired sets (clip i of one made for the caption of clip i of the other)
                     without the pairs' own terms
  manifold_precision the fraction of one set inside the other's k-NN manifold: precision
                     (generated in real) and recall (real in generated)
  kl_matrix          KL(p_i || q_j) for every pair of rows, of independent Bernoulli posteriors
                     (multi-label heads) or of softmax posteriors (single-label heads)
  melstats           an embedding almtok does not train: per-band mean and std of the log-mel

`bootstrap` resamples clips with replacement and gives a percentile interval of the resampled
values centred on the full-sample value (their mean shifted to it): repeated clips in a resample
inflate FD and KID, and the centring removes that bias, so that the interval is about the value
it goes with (`centred_interval`). A mean has no such bias: `mean_with_ci` keeps the plain
percentile interval, which stays within the range of the values it averages (a fraction's within
[0, 1]).

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


def _kth_neighbour_radii(x_NxE: np.ndarray, k: int) -> np.ndarray:
  """Each point's distance to its k-th nearest other point [N]."""
  kth = min(k, len(x_NxE) - 1)   # Column 0 of the sorted row is the point itself.
  d_NxN = np.sqrt(np.maximum(_sq_distances(x_NxE, x_NxE), 0.0))
  return np.partition(d_NxN, kth, axis=1)[:, kth]


def _sq_distances(a_NxE: np.ndarray, b_MxE: np.ndarray) -> np.ndarray:
  return (np.sum(a_NxE ** 2, -1)[:, None] + np.sum(b_MxE ** 2, -1)[None, :]
          - 2.0 * a_NxE @ b_MxE.T)


def manifold_precision(x_NxE: np.ndarray, y_MxE: np.ndarray, k: int = 5) -> float:
  """The fraction of x that falls within y's manifold: the union of balls around each y_j
  reaching its k-th nearest neighbour in y (Kynkäänniemi et al., 2019). With x generated and y
  real it is precision (fidelity); with the two swapped, recall (diversity)."""
  x_NxE, y_MxE = np.asarray(x_NxE, np.float64), np.asarray(y_MxE, np.float64)
  radii_M = _kth_neighbour_radii(y_MxE, k)
  inside = _sq_distances(x_NxE, y_MxE) <= radii_M[None, :] ** 2
  return float(np.mean(np.any(inside, axis=1)))


def kl_matrix(p_NxK: np.ndarray, q_MxK: np.ndarray, bernoulli: bool) -> np.ndarray:
  """KL(p_i || q_j) for every pair [N, M]: the sum over classes of KL(Bernoulli(p) ||
  Bernoulli(q)) (`bernoulli`), or the KL of two categorical distributions over the last axis.
  Probabilities are clipped away from 0 (and 1) before the log."""
  p = np.clip(np.asarray(p_NxK, np.float64), _EPS, 1.0 - _EPS if bernoulli else 1.0)
  q = np.clip(np.asarray(q_MxK, np.float64), _EPS, 1.0 - _EPS if bernoulli else 1.0)
  if not bernoulli:
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    return np.sum(p * np.log(p), -1)[:, None] - p @ np.log(q).T
  self_N = np.sum(p * np.log(p) + (1.0 - p) * np.log(1.0 - p), -1)
  return self_N[:, None] - p @ np.log(q).T - (1.0 - p) @ np.log(1.0 - q).T


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
  return centred_interval(float(metric(np.arange(n))), values, level, resamples)


def centred_interval(value: float, values: Sequence[float], level: float = 0.95,
                     resamples: int | None = None) -> Estimate:
  """The `level` percentile interval of resampled `values` centred on `value` (see the module
  docstring); resamples where the metric is undefined (NaN, as a ratio over 0) are left out."""
  resamples = len(values) if resamples is None else resamples
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]   # Resamples where the metric is undefined (0 / 0).
  if not values.size:
    return Estimate(value, np.nan, np.nan, resamples)
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(values - values.mean(), [tail, 100.0 - tail]) + value
  return Estimate(value, float(low), float(high), resamples)


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
