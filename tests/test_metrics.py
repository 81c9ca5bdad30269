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


def test_adherence_is_precision_recall_and_f1_of_the_caption_pairs():
  labels = [json.dumps({"events": [
      {"kind": "tone", "register": "low", "envelope": "sustained", "start_s": 0.0},
      {"kind": "noise", "color": "pink", "envelope": "fade_in", "start_s": 1.0}]})]
  post = {h.name: np.zeros((1, len(h.classes))) for h in tagger.HEADS}
  kind = tagger.HEAD_BY_NAME["kinds"].classes.index
  post["kinds"][0, kind("tone")] = 0.9
  post["kinds"][0, kind("drums")] = 0.7  # Found, not asked.
  post["registers"][0, 0] = 0.8          # low: found.
  post["colors"][0, 1] = 0.2             # pink: missed.
  found = evaluate.adherence(post, labels)
  # Asked: tone, noise, low, pink, sustained, fade_in (6); found: tone, drums, low (3); 2 in both.
  assert found["recall_overall"][0] == pytest.approx(2 / 6)
  assert found["precision_overall"][0] == pytest.approx(2 / 3)
  assert found["f1_overall"][0] == pytest.approx(2 * 2 / (6 + 3))
  assert found["f1_kinds"][0] == pytest.approx(2 * 1 / (2 + 2))   # tone of {tone, noise}.
  assert found["f1_registers"][0] == 1.0 and found["f1_colors"][0] == 0.0
  assert np.isnan(found["f1_directions"][0])          # The caption names no direction.
  # A clip that triggers every class finds everything asked but scores far below 1.
  every = {h.name: np.ones((1, len(h.classes))) for h in tagger.HEADS}
  loud = evaluate.adherence(every, labels)
  assert loud["recall_overall"][0] == 1.0 and loud["f1_overall"][0] < 0.5


def test_set_scores_and_the_mismatched_pair_floor_on_hand_made_sets():
  asked = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
  precision, recall, f1 = metrics.set_scores(asked, asked)
  np.testing.assert_array_equal(f1[:3], 1.0)
  assert np.isnan(f1[3]) and np.isnan(recall[3]) and np.isnan(precision[3])  # Nothing asked.
  nothing = np.zeros_like(asked)
  np.testing.assert_array_equal(metrics.set_scores(nothing, asked)[2][:3], 0.0)
  # Clip 0 finds {0, 1}: against clip 1's {2, 3} F1 0, against clip 2's {0, 2} F1 1/2; clip 3
  # asks nothing and does not count. The floor is the mean over those pairs.
  floor = metrics.mismatched_f1(asked, asked)
  assert floor[0] == pytest.approx((0.0 + 0.5) / 2)
  assert floor[1] == pytest.approx((0.0 + 0.5) / 2) and floor[2] == pytest.approx(0.5)
  # Clip 3 finds nothing: F1 0 against every other caption.
  assert floor[3] == 0.0


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


def test_kl_matrix_holds_the_paired_kls_on_its_diagonal_and_the_floor_is_their_off_diagonal():
  rng = np.random.default_rng(8)
  p, q = rng.uniform(0.02, 0.98, (6, 5)), rng.uniform(0.02, 0.98, (6, 5))
  np.testing.assert_allclose(np.diag(metrics.kl_matrix(p, q, bernoulli=True)),
                             metrics.bernoulli_kl(p, q), rtol=1e-10)
  c, d = rng.dirichlet(np.ones(4), 6), rng.dirichlet(np.ones(4), 6)
  matrix = metrics.kl_matrix(c, d, bernoulli=False)
  np.testing.assert_allclose(np.diag(matrix), metrics.categorical_kl(c, d), rtol=1e-10)
  np.testing.assert_allclose(matrix[1, 3], metrics.categorical_kl(c[1:2], d[3:4])[0], rtol=1e-10)
  # The floor of a generated clip: its KL against every other caption's reference, averaged.
  post = lambda a: {h.name: (a[:, :len(h.classes)] if h.kind == "multi"
                             else a[:, :len(h.classes)] / a[:, :len(h.classes)].sum(-1,
                                                                                  keepdims=True))
                    for h in tagger.HEADS}
  wide_r, wide_g = rng.uniform(0.05, 0.95, (6, 40)), rng.uniform(0.05, 0.95, (6, 40))
  ref = evaluate.Scored(np.zeros((6, 2)), post(wide_r), np.zeros((6, 2)))
  gen = evaluate.Scored(np.zeros((6, 2)), post(wide_g), np.zeros((6, 2)))
  floor = evaluate.mismatched_kl(ref, gen)
  others = [evaluate.paired_kl(evaluate.Scored(ref.embedding_NxE[[j]],
                                               {k: v[[j]] for k, v in ref.posteriors.items()},
                                               ref.melstats_NxE[[j]]),
                               evaluate.Scored(gen.embedding_NxE[[0]],
                                               {k: v[[0]] for k, v in gen.posteriors.items()},
                                               gen.melstats_NxE[[0]]))[0] for j in range(1, 6)]
  assert floor[0] == pytest.approx(np.mean(others), rel=1e-9)
  rev = evaluate.mismatched_kl(ref, gen, reverse=True)
  assert rev[0] == pytest.approx(np.mean([evaluate.paired_kl(
      evaluate.Scored(gen.embedding_NxE[[0]], {k: v[[0]] for k, v in gen.posteriors.items()},
                      gen.melstats_NxE[[0]]),
      evaluate.Scored(ref.embedding_NxE[[j]], {k: v[[j]] for k, v in ref.posteriors.items()},
                      ref.melstats_NxE[[j]]))[0] for j in range(1, 6)]), rel=1e-9)


def test_normalized_adherence_is_one_for_clips_that_answer_as_the_real_ones():
  def event(**kw):
    return dict(dict(envelope="sustained", start_s=0.0), **kw)
  labels = [json.dumps({"events": [event(kind=k, register=r)]})
            for k, r in (("tone", "low"), ("chord", "high"), ("arpeggio", "mid"), ("tone", "high"))]
  post = {h.name: np.zeros((4, len(h.classes))) for h in tagger.HEADS}
  _, asked = evaluate.attribute_sets(post, labels)
  columns = evaluate._head_columns()  # pylint: disable=protected-access
  for name, cols in columns.items():   # Posteriors that find exactly what each caption asks.
    post[name] = asked[:, cols].astype(float)
  real = evaluate.Scored(np.zeros((4, 2)), post, np.zeros((4, 2)))
  def normalized(gen):
    return evaluate.normalized_adherence(
        evaluate.adherence(gen.posteriors, labels)["f1_overall"],
        evaluate.adherence(real.posteriors, labels)["f1_overall"],
        evaluate.adherence_floor(gen.posteriors, labels), resamples=50)

  same = normalized(real)
  assert same.value == pytest.approx(1.0)
  # Clips that answer the next caption instead: at most the floor's level, far below 1.
  shifted = {k: np.roll(v, 1, axis=0) for k, v in post.items()}
  other = evaluate.Scored(np.zeros((4, 2)), shifted, np.zeros((4, 2)))
  assert normalized(other).value < 0.2
