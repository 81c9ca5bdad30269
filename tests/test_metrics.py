"""The evaluation metrics: Fréchet distance in closed form and against a direct computation,
FD-inf, KID, the KL matrix, and the bootstrap intervals.

Shape letters: N clips, E embedding width, K classes.
"""

import numpy as np
import pytest
import scipy.linalg

from almtok.evaluation import metrics


def _direct_fd(x, y):
  """The textbook float64 formula with scipy's general matrix square root."""
  mu1, mu2 = x.mean(0), y.mean(0)
  c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  cross = scipy.linalg.sqrtm(c1 @ c2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * cross))


def test_frechet_distance_closed_form_symmetry_and_identity():
  d = 8
  for m, s in ((0.0, 1.0), (0.5, 1.0), (0.0, 2.0), (1.5, 0.3)):
    mu = np.full(d, m)
    got = metrics.frechet_from_moments(np.zeros(d), np.eye(d), mu, s ** 2 * np.eye(d))
    assert got == pytest.approx(m ** 2 * d + d * (1 - s) ** 2, rel=1e-9, abs=1e-9)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((500, d))
  y = rng.standard_normal((400, d)) @ rng.standard_normal((d, d)) * 0.5 + 1.0
  assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
  assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x),
                                                         rel=1e-9)
  assert metrics.frechet_distance(x, y) == pytest.approx(_direct_fd(x, y), rel=1e-6)


def test_frechet_distance_is_finite_on_near_singular_covariances():
  rng = np.random.default_rng(1)
  x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.1   # Rank <= 19.
  value = metrics.frechet_distance(x, y)
  assert np.isfinite(value) and value >= 0


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
  rng = np.random.default_rng(2)
  x, y = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
  same = metrics.kernel_distance(x, y)
  shifted = metrics.kernel_distance(x, y + 1.0)
  assert abs(same) < 0.05 and shifted > 10 * abs(same) + 0.1


def test_bootstrap_interval_covers_the_value_and_narrows_with_more_clips():
  rng = np.random.default_rng(4)
  small = metrics.mean_with_ci(rng.normal(1.0, 1.0, 50), resamples=500)
  large = metrics.mean_with_ci(rng.normal(1.0, 1.0, 2000), resamples=500)
  assert small.low <= small.value <= small.high and large.low <= large.value <= large.high
  assert (large.high - large.low) < (small.high - small.low) / 3
  assert large.low < 1.0 < large.high


def test_kid_without_the_pairs_own_terms_is_not_negative_on_near_copies():
  # Paired near-copies (a clip and, say, its resynthesis): the unpaired estimator counts each
  # pair's own high similarity in the cross term and falls well below zero; without those
  # terms the estimate is zero within its noise.
  rng = np.random.default_rng(6)
  x = rng.standard_normal((200, 16)) * 3.0
  y = x + 0.05 * rng.standard_normal(x.shape)
  unpaired = metrics.kernel_distance(x, y)
  paired = metrics.kernel_distance(x, y, paired=True)
  spread = np.std([metrics.kernel_distance(x[i], y[i], paired=True)
                   for i in (rng.permutation(200)[:100] for _ in range(20))])
  assert unpaired < -5 * spread, (unpaired, spread)
  assert abs(paired) < 3 * spread, (paired, spread)
  with pytest.raises(ValueError, match="one size"):
    metrics.kernel_distance(x, y[:10], paired=True)


def test_fd_inf_recovers_the_fd_of_two_known_gaussians():
  # N(0, I) against N(mu, I) in 8 dimensions: FD = |mu|^2 = 2, whatever the covariances'
  # sampling noise adds at finite N (the bias falls as 1/N, the extrapolation removes it).
  rng = np.random.default_rng(7)
  d, mu = 8, np.full(8, 0.5)
  x = rng.standard_normal((4000, d))
  y = rng.standard_normal((4000, d)) + mu
  at_200 = metrics.frechet_distance(x[:200], y[:200])
  fd_inf, slope = metrics.frechet_distance_inf(x, y, min_clips=200)
  assert slope > 0 and at_200 > 2.0 + 0.05   # The finite-N bias is there...
  assert fd_inf == pytest.approx(2.0, abs=0.06), (fd_inf, at_200)   # ...and extrapolated away.


def test_interval_of_a_fraction_stays_within_zero_and_one():
  values = np.array([1.0] * 18 + [0.0] * 2)
  est = metrics.mean_with_ci(values, resamples=300)
  assert 0.0 <= est.low <= est.value <= est.high <= 1.0, est


def test_set_metric_intervals_contain_their_value():
  # Resampling with replacement repeats clips, which inflates FD and KID; the centred interval
  # still goes with the value it reports.
  rng = np.random.default_rng(5)
  x, y = rng.standard_normal((200, 64)), rng.standard_normal((200, 64)) + 0.1
  for metric in (metrics.frechet_distance, metrics.kernel_distance):
    est = metrics.bootstrap(lambda i, m=metric: m(x[i], y[i]), 200, resamples=200)
    assert est.low <= est.value <= est.high, (metric.__name__, est)




def test_kl_matrix_against_the_direct_formulas():
  rng = np.random.default_rng(8)
  p, q = rng.uniform(0.02, 0.98, (6, 5)), rng.uniform(0.02, 0.98, (4, 5))
  got = metrics.kl_matrix(p, q, bernoulli=True)
  want = np.sum(p[:, None] * np.log(p[:, None] / q[None])
                + (1 - p[:, None]) * np.log((1 - p[:, None]) / (1 - q[None])), -1)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  c, d = rng.dirichlet(np.ones(4), 6), rng.dirichlet(np.ones(4), 3)
  want = np.sum(c[:, None] * np.log(c[:, None] / d[None]), -1)
  np.testing.assert_allclose(metrics.kl_matrix(c, d, bernoulli=False), want, rtol=1e-10)
  np.testing.assert_allclose(np.diag(metrics.kl_matrix(c, c, bernoulli=False)), 0.0, atol=1e-12)
  assert np.all(metrics.kl_matrix(c, d, bernoulli=False) > 0)


def test_manifold_precision_tells_fidelity_from_diversity():
  rng = np.random.default_rng(9)
  real = rng.standard_normal((400, 4))
  collapsed = 0.2 * rng.standard_normal((400, 4))               # Faithful, not varied.
  far = rng.standard_normal((400, 4)) + 6.0                      # Neither.
  assert metrics.manifold_precision(collapsed, real) == 1.0      # Precision: all inside...
  assert metrics.manifold_precision(real, collapsed) < 0.3       # ...recall: little covered.
  assert metrics.manifold_precision(far, real) < 0.05
  same = metrics.manifold_precision(rng.standard_normal((400, 4)), real)
  assert 0.8 < same <= 1.0
