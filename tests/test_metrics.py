"""The evaluation metrics: Fréchet distance in closed form and against a direct computation, KID,
KL, the inception score, adherence, and the bootstrap intervals.

Shape letters: N clips, E embedding width, K classes.
"""

import json

import numpy as np
import pytest
import scipy.linalg

from almtok import evaluate
from almtok.evaluation import metrics
from almtok.evaluation import tagger


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


def test_kl_is_zero_for_identical_posteriors_and_positive_otherwise():
  rng = np.random.default_rng(3)
  p = rng.uniform(0.05, 0.95, (10, 7))
  assert np.allclose(metrics.bernoulli_kl(p, p), 0.0)
  assert np.all(metrics.bernoulli_kl(p, np.clip(p + 0.2, 0, 1)) > 0)
  q = rng.dirichlet(np.ones(5), size=10)
  assert np.allclose(metrics.categorical_kl(q, q), 0.0, atol=1e-12)
  assert np.all(metrics.categorical_kl(q, rng.dirichlet(np.ones(5), size=10)) > 0)


def test_inception_score_bounds():
  constant = np.tile([0.1, 0.7, 0.2], (50, 1))
  assert metrics.inception_score(constant) == pytest.approx(1.0)
  certain_even = np.eye(4)[np.arange(40) % 4]
  assert metrics.inception_score(certain_even) == pytest.approx(4.0, rel=1e-4)


def test_bootstrap_interval_covers_the_value_and_narrows_with_more_clips():
  rng = np.random.default_rng(4)
  small = metrics.mean_with_ci(rng.normal(1.0, 1.0, 50), resamples=500)
  large = metrics.mean_with_ci(rng.normal(1.0, 1.0, 2000), resamples=500)
  assert small.low <= small.value <= small.high and large.low <= large.value <= large.high
  assert (large.high - large.low) < (small.high - small.low) / 3
  assert large.low < 1.0 < large.high
  # Paired: the same clips for both runs; a constant offset is found exactly.
  values = rng.normal(0.0, 1.0, 100)
  diff = metrics.paired_bootstrap(lambda i: float(values[i].mean() + 0.5),
                                  lambda i: float(values[i].mean()), 100, resamples=200)
  assert diff.value == pytest.approx(0.5) and diff.low == pytest.approx(0.5)


def test_adherence_counts_the_caption_pairs_the_tagger_finds():
  labels = [json.dumps({"events": [
      {"kind": "tone", "register": "low", "envelope": "sustained", "start_s": 0.0},
      {"kind": "noise", "color": "pink", "envelope": "fade_in", "start_s": 1.0}]})]
  post = {h.name: np.zeros((1, len(h.classes))) for h in tagger.HEADS}
  post["kinds"][0, tagger.HEAD_BY_NAME["kinds"].classes.index("tone")] = 0.9
  post["registers"][0, 0] = 0.8          # low: found.
  post["colors"][0, 1] = 0.2             # pink: missed.
  found = evaluate.adherence(post, labels)
  assert found["kinds"][0] == pytest.approx(0.5)      # tone yes, noise no.
  assert found["registers"][0] == 1.0 and found["colors"][0] == 0.0
  assert np.isnan(found["directions"][0])             # The caption names no direction.
  assert found["overall"][0] == pytest.approx(2 / 6)  # 6 pairs, 2 found.


def test_set_metric_intervals_contain_their_value():
  # Resampling with replacement repeats clips, which inflates FD and KID; the centred interval
  # still goes with the value it reports.
  rng = np.random.default_rng(5)
  x, y = rng.standard_normal((200, 64)), rng.standard_normal((200, 64)) + 0.1
  for metric in (metrics.frechet_distance, metrics.kernel_distance):
    est = metrics.bootstrap(lambda i, m=metric: m(x[i], y[i]), 200, resamples=200)
    assert est.low <= est.value <= est.high, (metric.__name__, est)
