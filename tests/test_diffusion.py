"""Tests for almtok.diffusion: schedules, posterior, loss, CFG and the reverse samplers.

The samplers are checked on a 2-D Gaussian target N(mu, diag(sigma^2)), for which the optimal
eps (and v) is analytic. With that network every reverse step is linear-Gaussian, so the law of
the samples is also computed exactly in float64 and compared with the empirical one.

Shape letters: N samples, C = 2 channels, K schedule steps.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almtok import diffusion

T = 1000
N = 20000
MU_C = np.array([0.7, -1.2])
SIGMA_C = np.array([0.5, 1.5])


@pytest.fixture(scope="module")
def cosine():
  return diffusion.cosine_schedule(T)


def _f64(a):
  return np.asarray(a, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Schedules.
# ------------------------------------------------------------------------------------------------


def _cosine_f(u, s=0.008):
  return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def _cosine_betas64():
  """Reference betas in float64, straight from the definition."""
  return np.array([min(1 - _cosine_f((k + 1) / T) / _cosine_f(k / T), 0.999) for k in range(T)])


def test_cosine_alphas_cumprod_closed_form(cosine):
  f = _cosine_f
  ab_K = _f64(cosine.alphas_cumprod)
  # alphas_cumprod[k] is the level after step k, i.e. f((k + 1) / T) / f(0).
  for k in [0, 1, 10, 250, 500, 900, 990, 997]:
    np.testing.assert_allclose(ab_K[k], f((k + 1) / T) / f(0), rtol=1e-5)
  # Only the last beta hits max_beta (f(1) = 0 would give beta = 1).
  betas_K = _f64(cosine.betas)
  np.testing.assert_allclose(betas_K[-1], 0.999, rtol=1e-6)
  assert np.all(betas_K[:-1] < 0.999)
  np.testing.assert_allclose(ab_K[-1], ab_K[-2] * (1 - 0.999), rtol=1e-4)
  assert np.all(np.diff(ab_K) < 0)
  np.testing.assert_array_equal(np.asarray(cosine.timesteps), np.arange(T))
  assert cosine.alphas_cumprod.dtype == jnp.float32


def test_linear_schedule_endpoints():
  sched = diffusion.linear_schedule(1000)
  np.testing.assert_allclose(_f64(sched.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)
  sched = diffusion.linear_schedule(250)
  np.testing.assert_allclose(_f64(sched.betas)[[0, -1]], [4e-4, 0.08], rtol=1e-6)
  np.testing.assert_allclose(_f64(sched.alphas_cumprod), np.cumprod(1 - _f64(sched.betas)),
                             rtol=1e-6)


def test_posterior_matches_direct_formulas(cosine):
  betas_K = _cosine_betas64()
  ab_K = np.cumprod(1 - betas_K)
  ab_prev_K = np.concatenate([[1.0], ab_K[:-1]])
  rng = np.random.default_rng(0)
  t_N = np.array([0, 1, 5, 100, 500, 998, 999])
  x0_NxC = rng.normal(size=(len(t_N), 3))
  x_t_NxC = rng.normal(size=(len(t_N), 3))
  mean, var, log_var = diffusion.posterior_mean_variance(
      cosine, jnp.asarray(x0_NxC, jnp.float32), jnp.asarray(x_t_NxC, jnp.float32),
      jnp.asarray(t_N))
  b, ab, abp = betas_K[t_N][:, None], ab_K[t_N][:, None], ab_prev_K[t_N][:, None]
  want_mean = ((np.sqrt(abp) * b / (1 - ab)) * x0_NxC
               + (np.sqrt(1 - b) * (1 - abp) / (1 - ab)) * x_t_NxC)
  want_var = b * (1 - abp) / (1 - ab)
  np.testing.assert_allclose(_f64(mean), want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_f64(var), want_var, rtol=1e-5, atol=1e-12)
  assert var.shape == (len(t_N), 1)
  np.testing.assert_allclose(_f64(log_var)[1:], np.log(want_var[1:]), rtol=1e-5)
  # At t = 0 the variance is 0 and the clipped log borrows step 1.
  assert float(var[0, 0]) == 0.0
  np.testing.assert_allclose(float(log_var[0, 0]), np.log(want_var[1, 0]), rtol=1e-5)


def test_prediction_conversions_round_trip(cosine):
  rng = jax.random.key(0)
  r1, r2 = jax.random.split(rng)
  x0_NxC = jax.random.normal(r1, (64, 4))
  eps_NxC = jax.random.normal(r2, (64, 4))
  t_N = jnp.arange(64) * 15
  x_t = diffusion.q_sample(cosine, x0_NxC, t_N, eps_NxC)
  v = diffusion.v_from_x0_eps(cosine, x0_NxC, t_N, eps_NxC)
  np.testing.assert_allclose(diffusion.x0_from_v(cosine, x_t, t_N, v), x0_NxC, atol=1e-5)
  np.testing.assert_allclose(diffusion.eps_from_v(cosine, x_t, t_N, v), eps_NxC, atol=1e-5)
  np.testing.assert_allclose(diffusion.predict_eps_from_x0(cosine, x_t, t_N, x0_NxC), eps_NxC,
                             atol=1e-3)
  # x0 from eps is only well conditioned away from the noisiest steps.
  low = t_N < 600
  np.testing.assert_allclose(diffusion.predict_x0_from_eps(cosine, x_t, t_N, eps_NxC)[low],
                             x0_NxC[low], atol=1e-4)


def test_q_sample_statistics(cosine):
  x0_NxC = jnp.broadcast_to(jnp.asarray(MU_C, jnp.float32), (N, 2))
  for t in [0, 300, 700]:
    t_N = jnp.full((N,), t)
    noise_NxC = jax.random.normal(jax.random.key(t), (N, 2))
    x_t = _f64(diffusion.q_sample(cosine, x0_NxC, t_N, noise_NxC))
    ab = float(_f64(cosine.alphas_cumprod)[t])
    tol = 4 * math.sqrt(1 - ab) / math.sqrt(N)
    np.testing.assert_allclose(x_t.mean(0), math.sqrt(ab) * MU_C, atol=tol)
    np.testing.assert_allclose(x_t.std(0), math.sqrt(1 - ab), rtol=0.03)


def test_respace_identity_is_exact(cosine):
  for sched in (cosine, diffusion.linear_schedule(T)):
    again = diffusion.respace(sched, T)
    for name, a, b in zip(sched._fields, sched, again):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


@pytest.mark.parametrize("k", [1, 2, 25, 100, 333])
def test_respace_keeps_alphas_cumprod(cosine, k):
  sub = diffusion.respace(cosine, k)
  kept_K = np.asarray(sub.timesteps)
  assert sub.num_steps == k and len(np.unique(kept_K)) == k
  assert kept_K[-1] == T - 1 and (k == 1 or kept_K[0] == 0)
  np.testing.assert_allclose(_f64(sub.alphas_cumprod), _f64(cosine.alphas_cumprod)[kept_K],
                             rtol=1e-6)
  # The new chain is self-consistent: its alphas multiply up to its alphas_cumprod, and
  # betas + alphas = 1 (to float32 rounding) even where beta is within 1e-8 of 1.
  np.testing.assert_allclose(np.cumprod(_f64(sub.alphas)), _f64(sub.alphas_cumprod), rtol=1e-5)
  np.testing.assert_allclose(_f64(sub.betas) + _f64(sub.alphas), 1.0, atol=1e-7)
  assert np.all(_f64(sub.alphas_cumprod) > 0)
  if k > 1:
    np.testing.assert_allclose(kept_K, np.arange(k) * (T - 1) / (k - 1), atol=0.5 + 1e-9)


# ------------------------------------------------------------------------------------------------
# Loss.
# ------------------------------------------------------------------------------------------------


def test_loss_is_zero_for_the_true_noise_and_weights_offsets(cosine):
  # With x0 = 0, x_t = sqrt(1 - ab) eps, so an exact network is available in closed form; an
  # extra per-token offset read from z makes each token's loss exactly offset^2.
  n, batch_mul = 64, 4
  x0_NxC = jnp.zeros((n, 3))
  offset_N = jnp.linspace(-1.0, 1.0, n)
  z_NxD = jnp.stack([offset_N, -offset_N], axis=1)
  weight_N = (jnp.arange(n) % 3 == 0).astype(jnp.float32)
  full_ab = cosine.alphas_cumprod
  seen = {}

  def make_fn(prediction, with_offset):
    def fn(x_t_MxC, t_M, z_MxD):
      seen["rows"] = x_t_MxC.shape[0]
      ab_Mx1 = full_ab[t_M][:, None]
      eps = x_t_MxC / jnp.sqrt(1 - ab_Mx1)
      out = eps if prediction == "eps" else jnp.sqrt(ab_Mx1) * eps
      return out + z_MxD[:, :1] if with_offset else out
    return fn

  rng = jax.random.key(3)
  for prediction in ("eps", "v"):
    loss = diffusion.diffusion_loss(make_fn(prediction, False), cosine, x0_NxC, z_NxD, None, rng,
                                    batch_mul=batch_mul, prediction=prediction)
    assert loss.dtype == jnp.float32
    assert seen["rows"] == n   # One draw's tokens per call; the batch_mul draws are vmapped.
    np.testing.assert_allclose(float(loss), 0.0, atol=1e-8)
    loss = diffusion.diffusion_loss(make_fn(prediction, True), cosine, x0_NxC, z_NxD, weight_N, rng,
                                    batch_mul=batch_mul, prediction=prediction)
    want = float(jnp.sum(weight_N * offset_N**2) / jnp.sum(weight_N))
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_loss_of_a_zero_network(cosine):
  n = 4096
  x0_NxC = jnp.zeros((n, 2))
  z_NxD = jnp.zeros((n, 1))
  zero_fn = lambda x, t, z: jnp.zeros_like(x)
  rng = jax.random.key(4)
  loss_eps = diffusion.diffusion_loss(zero_fn, cosine, x0_NxC, z_NxD, None, rng, batch_mul=2)
  np.testing.assert_allclose(float(loss_eps), 1.0, atol=0.03)
  # E[v^2] = E[ab] for x0 = 0.
  loss_v = diffusion.diffusion_loss(zero_fn, cosine, x0_NxC, z_NxD, None, rng, batch_mul=2,
                                    prediction="v")
  np.testing.assert_allclose(float(loss_v), float(jnp.mean(cosine.alphas_cumprod)), atol=0.03)
  all_masked = diffusion.diffusion_loss(zero_fn, cosine, x0_NxC, z_NxD, jnp.zeros((n,)), rng)
  assert float(all_masked) == 0.0


def test_rematerialised_draws_give_the_same_sums_and_gradients(cosine):
  # Draws one at a time (remat) or all at once: the same rows, so the same loss and gradient.
  n, c = 64, 3
  rng = jax.random.key(5)
  x0_NxC = jax.random.normal(jax.random.key(6), (n, c))
  z_NxD = jax.random.normal(jax.random.key(7), (n, 2))
  w_N = (jnp.arange(n) % 5 != 0).astype(jnp.float32)
  keys_N = jax.random.split(rng, n)

  def terms(w_CxC, remat, prediction):
    fn = lambda x, t, z: jnp.tanh(x @ w_CxC) + z[:, :1] * t[:, None] / 1000.0
    return diffusion.diffusion_loss_terms(fn, cosine, x0_NxC, z_NxD, w_N, keys_N, batch_mul=3,
                                          prediction=prediction, remat=remat)

  w = jax.random.normal(jax.random.key(8), (c, c))
  for prediction in ("eps", "v"):
    plain, checked = terms(w, False, prediction), terms(w, True, prediction)
    np.testing.assert_allclose(checked, plain, rtol=1e-6)
    grads = [jax.grad(lambda m, r=r: terms(m, r, prediction)[0])(w) for r in (False, True)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Classifier-free guidance.
# ------------------------------------------------------------------------------------------------


def test_cfg_scale_schedules():
  np.testing.assert_allclose(diffusion.cfg_scale_at(0.0, 3.0, "linear"), 1.0)
  np.testing.assert_allclose(diffusion.cfg_scale_at(1.0, 3.0, "linear"), 3.0)
  np.testing.assert_allclose(diffusion.cfg_scale_at(0.25, 3.0, "linear"), 1.5)
  np.testing.assert_allclose(diffusion.cfg_scale_at(0.3, 3.0, "constant"), 3.0)
  per_example = diffusion.cfg_scale_at(0.5, jnp.array([1.0, 2.0, 5.0]), "linear")
  np.testing.assert_allclose(per_example, [1.0, 1.5, 3.0])
  with pytest.raises(ValueError):
    diffusion.cfg_scale_at(0.5, 2.0, "cosine")


def test_guide_formula_and_scale_one_is_exact():
  rng1, rng2 = jax.random.split(jax.random.key(5))
  cond_NxC = jax.random.normal(rng1, (8, 3))
  uncond_NxC = jax.random.normal(rng2, (8, 3))
  out_2NxC = jnp.concatenate([cond_NxC, uncond_NxC], axis=0)
  guided = diffusion.guide(out_2NxC, 1.0)
  np.testing.assert_array_equal(guided[:8], cond_NxC)
  np.testing.assert_array_equal(guided[8:], cond_NxC)
  scale_N = jnp.linspace(0.0, 4.0, 8)
  guided = _f64(diffusion.guide(out_2NxC, scale_N))
  c, u = _f64(cond_NxC), _f64(uncond_NxC)
  want = u + _f64(scale_N)[:, None] * (c - u)
  np.testing.assert_allclose(guided[:8], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(guided[8:], want, rtol=1e-5, atol=1e-6)


def test_with_cfg_runs_one_doubled_batch():
  calls = []

  def fn(x_t, t, z):
    calls.append(x_t.shape[0])
    return x_t * z

  x_NxC = jnp.ones((4, 2))
  t_N = jnp.zeros((4,), jnp.int32)
  guided_fn = diffusion.with_cfg(fn, jnp.full((4, 1), 3.0), jnp.full((4, 1), 1.0),
                                 jnp.array([1.0, 2.0, 0.0, 0.5]))
  out = guided_fn(x_NxC, t_N)
  assert calls == [8]
  np.testing.assert_allclose(out[:, 0], [3.0, 5.0, 1.0, 2.0])


# ------------------------------------------------------------------------------------------------
# Samplers on a Gaussian target with the analytic network.
# ------------------------------------------------------------------------------------------------


def _analytic_fn(full, prediction="eps", mu_C=MU_C):
  """The exact E[eps | x_t] (or E[v | x_t]) for data ~ N(mu, diag(sigma^2))."""
  mu = jnp.asarray(mu_C, jnp.float32)[None, :]
  var = jnp.asarray(SIGMA_C**2, jnp.float32)[None, :]

  def fn(x_t_NxC, t_N):
    ab = full.alphas_cumprod[t_N][:, None]
    resid = x_t_NxC - jnp.sqrt(ab) * mu
    total_var = ab * var + 1 - ab
    eps = jnp.sqrt(1 - ab) * resid / total_var
    if prediction == "eps":
      return eps
    x0 = mu + jnp.sqrt(ab) * var * resid / total_var
    return jnp.sqrt(ab) * eps - jnp.sqrt(1 - ab) * x0

  return fn


def _exact_law(full, k, eta, temperature=1.0):
  """Mean and std of DDIM(eta) samples with the analytic eps, in float64.

  Written in DDIM's form (Song et al., eq. 12); eta = 1 is DDPM with the posterior variance.
  """
  kept = diffusion.respaced_timesteps(T, k)
  ab_K = np.cumprod(1 - _f64(full.betas))[kept]
  abp_K = np.concatenate([[1.0], ab_K[:-1]])
  m, v = np.zeros(2), np.ones(2)
  for j in range(k - 1, -1, -1):
    ab, abp = ab_K[j], abp_K[j]
    g = np.sqrt(1 - ab) / (ab * SIGMA_C**2 + 1 - ab)  # eps = g * (x - sqrt(ab) mu)
    sigma2 = eta**2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
    c_eps = np.sqrt(1 - abp - sigma2) - np.sqrt(abp) * np.sqrt(1 - ab) / np.sqrt(ab)
    a = np.sqrt(abp) / np.sqrt(ab) + c_eps * g
    b = -c_eps * g * np.sqrt(ab) * MU_C
    m, v = a * m + b, a * a * v + (sigma2 * temperature**2 if j > 0 else 0.0)
  return m, np.sqrt(v)


def _assert_mean_close(x_NxC, mean_C, std_C):
  """Sample mean within 4 standard errors."""
  err_C = np.abs(x_NxC.mean(0) - mean_C)
  assert np.all(err_C < 4 * std_C / math.sqrt(len(x_NxC))), (x_NxC.mean(0), mean_C)


@pytest.fixture(scope="module")
def samples(cosine):
  out = {}
  x_T = jax.random.normal(jax.random.key(11), (N, 2))
  rng = jax.random.key(12)
  eps_fn, v_fn = _analytic_fn(cosine), _analytic_fn(cosine, "v")
  for k in (25, 100):
    sub = diffusion.respace(cosine, k)
    out["ddpm", k] = jax.jit(lambda x, r, s=sub: diffusion.ddpm_sample(eps_fn, s, x, r))(x_T, rng)
  sub = diffusion.respace(cosine, 25)
  out["ddim1", 25] = diffusion.ddim_sample(eps_fn, sub, x_T, rng, eta=1.0)
  out["ddim0", 25] = diffusion.ddim_sample(eps_fn, sub, x_T, rng, eta=0.0)
  out["ddpm_v", 25] = diffusion.ddpm_sample(v_fn, sub, x_T, rng, prediction="v")
  out["ddim0_v", 25] = diffusion.ddim_sample(v_fn, sub, x_T, rng, prediction="v")
  temp_N = jnp.where(jnp.arange(N) < N // 2, 0.5, 1.0)
  out["ddpm_temp", 25] = diffusion.ddpm_sample(eps_fn, sub, x_T, rng, temperature=temp_N)
  out["ddpm_t05", 25] = diffusion.ddpm_sample(eps_fn, sub, x_T, rng, temperature=0.5)
  return {key: _f64(x) for key, x in out.items()}


@pytest.mark.parametrize("name,k,eta", [("ddpm", 25, 1.0), ("ddpm", 100, 1.0),
                                        ("ddim1", 25, 1.0), ("ddim0", 25, 0.0)])
def test_sampler_matches_exact_law_and_target(cosine, samples, name, k, eta):
  x_NxC = samples[name, k]
  assert x_NxC.shape == (N, 2) and np.all(np.isfinite(x_NxC))
  law_mean, law_std = _exact_law(cosine, k, eta)
  # The chain is unbiased in the mean for a Gaussian target, whatever K.
  np.testing.assert_allclose(law_mean, MU_C, atol=1e-3)
  _assert_mean_close(x_NxC, law_mean, law_std)
  np.testing.assert_allclose(x_NxC.std(0), law_std, rtol=0.03)
  # Discretisation shrinks the spread a little (about 9% at K=25 for DDPM, 3% at K=100).
  tol = {("ddpm", 25): 0.12, ("ddim1", 25): 0.12, ("ddpm", 100): 0.05, ("ddim0", 25): 0.07}
  np.testing.assert_allclose(x_NxC.std(0), SIGMA_C, rtol=tol[name, k])


def test_ddim_eta_one_equals_ddpm(samples):
  np.testing.assert_allclose(samples["ddim1", 25], samples["ddpm", 25], atol=1e-3)


def test_v_prediction_samplers_agree_with_eps(samples):
  np.testing.assert_allclose(samples["ddpm_v", 25], samples["ddpm", 25], atol=2e-3)
  np.testing.assert_allclose(samples["ddim0_v", 25], samples["ddim0", 25], atol=2e-3)


def test_temperature_shrinks_spread(cosine, samples):
  cold = samples["ddpm_t05", 25]
  law_mean, law_std = _exact_law(cosine, 25, 1.0, temperature=0.5)
  _assert_mean_close(cold, law_mean, law_std)
  np.testing.assert_allclose(cold.std(0), law_std, rtol=0.03)
  assert np.all(cold.std(0) < 0.6 * samples["ddpm", 25].std(0))
  # Per-example temperatures act row by row, with the same noise as the scalar runs.
  mixed = samples["ddpm_temp", 25]
  np.testing.assert_allclose(mixed[: N // 2], cold[: N // 2], atol=1e-5)
  np.testing.assert_allclose(mixed[N // 2:], samples["ddpm", 25][N // 2:], atol=1e-5)


def test_sampler_draws_x_T_from_shape_and_clips(cosine):
  sub = diffusion.respace(cosine, 10)
  fn = _analytic_fn(cosine)
  x = diffusion.ddpm_sample(fn, sub, (256, 2), jax.random.key(0), clip_x0=0.1)
  assert x.shape == (256, 2) and x.dtype == jnp.float32
  # The last step returns the (clipped) x0 estimate itself.
  assert float(jnp.max(jnp.abs(x))) <= 0.1 + 1e-6
  y = diffusion.ddpm_sample(fn, sub, (256, 2), jax.random.key(0))
  assert float(jnp.max(jnp.abs(y))) > 1.0


def test_cfg_sampler_with_scale_one_matches_conditional(cosine):
  # A conditional target (mean mu) and an unconditional one (mean 0), switched by z.
  sub = diffusion.respace(cosine, 20)
  cond_fn, uncond_fn = _analytic_fn(cosine), _analytic_fn(cosine, mu_C=np.zeros(2))

  def fn(x_t, t, z_Nx1):
    return jnp.where(z_Nx1 > 0, cond_fn(x_t, t), uncond_fn(x_t, t))

  n = 4096
  z_cond, z_uncond = jnp.ones((n, 1)), jnp.zeros((n, 1))
  x_T = jax.random.normal(jax.random.key(1), (n, 2))
  rng = jax.random.key(2)
  plain = diffusion.ddpm_sample(cond_fn, sub, x_T, rng)
  guided1 = diffusion.ddpm_sample(diffusion.with_cfg(fn, z_cond, z_uncond, 1.0), sub, x_T, rng)
  np.testing.assert_array_equal(np.asarray(guided1), np.asarray(plain))
  # Guidance above 1 pushes samples beyond the conditional mean, away from the unconditional.
  guided3 = diffusion.ddpm_sample(diffusion.with_cfg(fn, z_cond, z_uncond, 3.0), sub, x_T, rng)
  shift = _f64(guided3).mean(0) / MU_C
  assert np.all(shift > 1.5)
