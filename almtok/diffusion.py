"""Gaussian diffusion for per-token heads: schedules, losses and reverse samplers.

Everything here is a pure function of jnp arrays; nothing holds parameters. All schedule
constants and all noise arithmetic are float32, whatever dtype the denoiser computes in.

Shape letters:
  N: tokens in a batch (a decoder's B*L positions flattened, or any batch of vectors).
  C: token (latent) channels.
  D: conditioning width (the decoder state z that the denoiser reads).
  K: steps of a schedule (T = 1000 for training; K <= T after respacing).
  R: noise draws per token in the loss (`batch_mul`).

Conventions:
  * A `Schedule` has K steps indexed 0..K-1; index k is the k-th noise level, k = 0 the least
    noisy. Functions below take `t_N` as such an index into *their* schedule. The network is
    always shown `schedule.timesteps[t_N]`, the index into the original T-step schedule, so a
    denoiser trained on T steps is sampled unchanged on a respaced schedule.
  * ab is short for alphas_cumprod. alphas_cumprod[k] is the signal fraction after step k has
    been applied (improved-DDPM indexing): x_k = sqrt(ab_k) x0 + sqrt(1 - ab_k) eps. There is
    no entry for clean data; alphas_cumprod_prev[0] = 1 stands for it.
  * `prediction` names what the network outputs: 'eps' (the noise) or 'v'
    (v = sqrt(ab) eps - sqrt(1 - ab) x0).
  * Denoise functions: `diffusion_loss` calls `denoise_fn(x_t_NxC, t_N, z_NxD)`; samplers call
    `denoise_fn(x_t_NxC, t_N)` and the caller closes over its conditioning (see `with_cfg`).
    In both, t_N holds original-T timesteps (int32) and the output is cast to float32.
  * Temperature scales only the per-step sampling noise; CFG combines [cond; uncond] halves of
    one batch as uncond + s * (cond - uncond). Both accept a scalar or a per-example [N] array.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almtok import rng as rng_lib
from almtok import sharding

Array = jax.Array
SampleFn = Callable[[Array, Array], Array]
LossDenoiseFn = Callable[[Array, Array, Array], Array]

_PREDICTIONS = ("eps", "v")


class Schedule(NamedTuple):
  """Constants of a K-step Gaussian diffusion; every field but `timesteps` is float32 [K].

  `timesteps` (int32 [K]) maps each step to its index in the original T-step schedule
  (arange(T) unless respaced). Built in float64 on the host, stored as float32.
  """

  betas: Array
  alphas: Array
  alphas_cumprod: Array
  alphas_cumprod_prev: Array
  sqrt_alphas_cumprod: Array
  sqrt_one_minus_alphas_cumprod: Array
  sqrt_recip_alphas_cumprod: Array
  sqrt_recipm1_alphas_cumprod: Array
  posterior_variance: Array
  posterior_log_variance_clipped: Array
  posterior_mean_coef1: Array
  posterior_mean_coef2: Array
  timesteps: Array

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def _log_alphas(betas32_K: np.ndarray, alphas32_K: np.ndarray) -> np.ndarray:
  """log(1 - beta) in float64 from whichever of the float32 beta, 1 - beta is the smaller.

  float32 holds a small number to 24 bits but 1 - (small) only to ~1e-7 absolute, so small
  betas (the first steps) come from `betas` and betas near 1 (the last, respaced) from `alphas`.
  """
  betas_K = np.asarray(betas32_K, np.float64)
  alphas_K = np.asarray(alphas32_K, np.float64)
  with np.errstate(divide="ignore"):
    return np.where(betas_K < 0.5, np.log1p(-betas_K), np.log(alphas_K))


def _round_pair(log_alphas_K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float32 (beta, alpha): the smaller one rounded, the other 1 minus it (so idempotent)."""
  betas32_K = (-np.expm1(log_alphas_K)).astype(np.float32)
  alphas32_K = np.exp(log_alphas_K).astype(np.float32)
  one_minus = lambda a32: (1.0 - a32.astype(np.float64)).astype(np.float32)
  small_beta_K = betas32_K < 0.5
  return (np.where(small_beta_K, betas32_K, one_minus(alphas32_K)),
          np.where(small_beta_K, one_minus(betas32_K), alphas32_K))


def _schedule_from_log_alphas(log_alphas_K: np.ndarray, timesteps_K: np.ndarray) -> Schedule:
  """Derives every constant in float64, then stores float32.

  The per-step (beta, alpha) pair is rounded to float32 first and everything is derived from
  the rounded pair, so a schedule rebuilt from its own stored fields is bit-identical
  (`respace(s, s.num_steps) == s`).
  """
  log_alphas_K = np.asarray(log_alphas_K, np.float64)
  if log_alphas_K.ndim != 1 or not np.all((log_alphas_K < 0) & np.isfinite(log_alphas_K)):
    raise ValueError("every beta must lie in (0, 1).")
  betas32_K, alphas32_K = _round_pair(log_alphas_K)
  log_alphas_K = _log_alphas(betas32_K, alphas32_K)
  betas_K = -np.expm1(log_alphas_K)
  alphas_K = np.exp(log_alphas_K)
  log_ab_K = np.cumsum(log_alphas_K)
  ab_K = np.exp(log_ab_K)
  one_minus_ab_K = -np.expm1(log_ab_K)
  ab_prev_K = np.append(1.0, ab_K[:-1])
  one_minus_ab_prev_K = np.append(0.0, one_minus_ab_K[:-1])
  post_var_K = betas_K * one_minus_ab_prev_K / one_minus_ab_K
  # The posterior variance is 0 at k = 0; its log borrows step 1 so that it stays finite
  # (the value at k = 0 is never used because the last reverse step adds no noise).
  post_var_for_log_K = np.append(post_var_K[1], post_var_K[1:]) if len(betas_K) > 1 else betas_K
  f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
  return Schedule(
      betas=f32(betas32_K),
      alphas=f32(alphas32_K),
      alphas_cumprod=f32(ab_K),
      alphas_cumprod_prev=f32(ab_prev_K),
      sqrt_alphas_cumprod=f32(np.sqrt(ab_K)),
      sqrt_one_minus_alphas_cumprod=f32(np.sqrt(one_minus_ab_K)),
      sqrt_recip_alphas_cumprod=f32(np.exp(-0.5 * log_ab_K)),
      sqrt_recipm1_alphas_cumprod=f32(np.sqrt(np.expm1(-log_ab_K))),
      posterior_variance=f32(post_var_K),
      posterior_log_variance_clipped=f32(np.log(post_var_for_log_K)),
      posterior_mean_coef1=f32(betas_K * np.sqrt(ab_prev_K) / one_minus_ab_K),
      posterior_mean_coef2=f32(one_minus_ab_prev_K * np.sqrt(alphas_K) / one_minus_ab_K),
      timesteps=jnp.asarray(timesteps_K, dtype=jnp.int32),
  )


def _schedule_from_betas(betas_K: np.ndarray) -> Schedule:
  betas_K = np.asarray(betas_K, np.float64)
  if betas_K.ndim != 1 or np.any(betas_K <= 0) or np.any(betas_K >= 1):
    raise ValueError("betas must be a 1-D array in (0, 1).")
  return _schedule_from_log_alphas(np.log1p(-betas_K), np.arange(len(betas_K)))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
  """Nichol & Dhariwal's cosine schedule.

  With f(u) = cos^2((u + s) / (1 + s) * pi / 2): beta_k = min(1 - f((k+1)/T) / f(k/T), max_beta),
  so alphas_cumprod[k] = f((k+1)/T) / f(0) wherever no beta up to k was clipped (for T = 1000
  only the last beta, where f(1) = 0, is clipped).
  """
  f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
  betas = [min(1.0 - f((k + 1) / num_steps) / f(k / num_steps), max_beta) for k in range(num_steps)]
  return _schedule_from_betas(np.array(betas))


def linear_schedule(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
  """DDPM's linear betas; the endpoints are scaled by 1000 / num_steps as in improved DDPM."""
  scale = 1000.0 / num_steps
  return _schedule_from_betas(
      np.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=np.float64))


def respaced_timesteps(num_steps: int, k: int) -> np.ndarray:
  """k evenly spaced indices into 0..num_steps-1 (rounded), always keeping both ends."""
  if not 1 <= k <= num_steps:
    raise ValueError(f"cannot keep {k} of {num_steps} steps")
  if k == 1:
    return np.array([num_steps - 1])
  stride = (num_steps - 1) / (k - 1)
  return np.array([round(i * stride) for i in range(k)])


def respace(schedule: Schedule, k: int) -> Schedule:
  """Keeps k evenly spaced steps of `schedule` (improved-DDPM respacing).

  The kept steps keep the original alphas_cumprod (to float32 rounding); betas are recomputed
  so that the k-step chain reaches those levels: 1 - beta'_j = ab[kept_j] / ab[kept_{j-1}],
  taken as a float64 product of the original (1 - beta) over the skipped steps. respace(s,
  s.num_steps) == s exactly. Call on the host (k is static); the result is a `Schedule`.
  """
  kept_K = respaced_timesteps(schedule.num_steps, k)
  log_alphas_T = _log_alphas(np.asarray(schedule.betas), np.asarray(schedule.alphas))
  # Step j absorbs the original steps kept_{j-1}+1 .. kept_j; reduceat sums each such segment.
  starts_K = np.append(0, kept_K[:-1] + 1)
  log_alphas_K = np.add.reduceat(log_alphas_T, starts_K)
  return _schedule_from_log_alphas(log_alphas_K, np.asarray(schedule.timesteps)[kept_K])


def _at(a_K: Array, t_N: Array, x: Array) -> Array:
  """Gathers a_K[t_N] and shapes it to broadcast against x (leading dims = t_N's dims)."""
  v = a_K[t_N]
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _per_example(value: float | Array, x: Array) -> Array:
  """A scalar or a per-example [N] value, shaped [N, 1, ...] to broadcast against x_Nx..."""
  v = jnp.asarray(value, dtype=jnp.float32)
  if v.ndim not in (0, 1):
    raise ValueError(f"expected a scalar or a per-example vector, got shape {v.shape}")
  v = jnp.broadcast_to(jnp.reshape(v, (-1,)), x.shape[:1])
  return jnp.reshape(v, x.shape[:1] + (1,) * (x.ndim - 1))


def q_sample(schedule: Schedule, x0_NxC: Array, t_N: Array, noise_NxC: Array) -> Array:
  """Draws x_t ~ q(x_t | x0) = N(sqrt(ab_t) x0, (1 - ab_t) I) with the given noise."""
  x0_NxC = x0_NxC.astype(jnp.float32)
  return (_at(schedule.sqrt_alphas_cumprod, t_N, x0_NxC) * x0_NxC
          + _at(schedule.sqrt_one_minus_alphas_cumprod, t_N, x0_NxC) * noise_NxC)


def posterior_mean_variance(
    schedule: Schedule, x0_NxC: Array, x_t_NxC: Array, t_N: Array
) -> tuple[Array, Array, Array]:
  """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0).

  Variance and log-variance come shaped [N, 1] (broadcastable against x).
  """
  mean = (_at(schedule.posterior_mean_coef1, t_N, x_t_NxC) * x0_NxC
          + _at(schedule.posterior_mean_coef2, t_N, x_t_NxC) * x_t_NxC)
  var = _at(schedule.posterior_variance, t_N, x_t_NxC)
  log_var = _at(schedule.posterior_log_variance_clipped, t_N, x_t_NxC)
  return mean, var, log_var


def predict_x0_from_eps(schedule: Schedule, x_t_NxC: Array, t_N: Array, eps_NxC: Array) -> Array:
  """x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab).

  Ill-conditioned at the noisiest steps: at the last cosine step (beta = 0.999) 1/sqrt(ab) is
  about 2e4, so an eps error of 1e-3 becomes an x0 error of 20 (v prediction has no such gain).
  """
  return (_at(schedule.sqrt_recip_alphas_cumprod, t_N, x_t_NxC) * x_t_NxC
          - _at(schedule.sqrt_recipm1_alphas_cumprod, t_N, x_t_NxC) * eps_NxC)


def predict_eps_from_x0(schedule: Schedule, x_t_NxC: Array, t_N: Array, x0_NxC: Array) -> Array:
  """eps = (x_t / sqrt(ab) - x0) / sqrt(1 / ab - 1)."""
  return ((_at(schedule.sqrt_recip_alphas_cumprod, t_N, x_t_NxC) * x_t_NxC - x0_NxC)
          / _at(schedule.sqrt_recipm1_alphas_cumprod, t_N, x_t_NxC))


def v_from_x0_eps(schedule: Schedule, x0_NxC: Array, t_N: Array, eps_NxC: Array) -> Array:
  """v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho)."""
  return (_at(schedule.sqrt_alphas_cumprod, t_N, x0_NxC) * eps_NxC
          - _at(schedule.sqrt_one_minus_alphas_cumprod, t_N, x0_NxC) * x0_NxC)


def x0_from_v(schedule: Schedule, x_t_NxC: Array, t_N: Array, v_NxC: Array) -> Array:
  """x0 = sqrt(ab) x_t - sqrt(1 - ab) v."""
  return (_at(schedule.sqrt_alphas_cumprod, t_N, x_t_NxC) * x_t_NxC
          - _at(schedule.sqrt_one_minus_alphas_cumprod, t_N, x_t_NxC) * v_NxC)


def eps_from_v(schedule: Schedule, x_t_NxC: Array, t_N: Array, v_NxC: Array) -> Array:
  """eps = sqrt(1 - ab) x_t + sqrt(ab) v."""
  return (_at(schedule.sqrt_one_minus_alphas_cumprod, t_N, x_t_NxC) * x_t_NxC
          + _at(schedule.sqrt_alphas_cumprod, t_N, x_t_NxC) * v_NxC)


def dynamic_threshold(x0_NxC: Array, percentile: float, bound: float) -> Array:
  """Imagen's dynamic thresholding, for latents normalized to unit std: per row, s = max(bound,
  the `percentile` quantile of |x0|); x0 is clipped to [-s, s] and scaled by bound / s.

  A row whose quantile is within the bound is only clipped to it; a row that guidance pushed
  beyond it is shrunk as a whole, keeping its shape, so that every entry ends within +-bound.
  """
  s_Nx1 = jnp.maximum(jnp.quantile(jnp.abs(x0_NxC), percentile, axis=-1, keepdims=True), bound)
  return jnp.clip(x0_NxC, -s_Nx1, s_Nx1) * (bound / s_Nx1)


def x0_eps_from_output(
    schedule: Schedule, x_t_NxC: Array, t_N: Array, out_NxC: Array, prediction: str,
    clip_x0: float | None = None, threshold: float | None = None,
    x0_range: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
  """Turns a network output into (x0, eps) estimates.

  `clip_x0` bounds x0 to [-clip_x0, clip_x0]; with `threshold` (a percentile in (0, 1)) the bound
  is applied by `dynamic_threshold` instead of a plain clip. `x0_range` (lo_C, hi_C) then clips
  each channel to the range the data spans (the analogue of clipping images to [-1, 1]). eps is
  made consistent with the bounded x0.
  """
  _check_prediction(prediction)
  out_NxC = out_NxC.astype(jnp.float32)
  if prediction == "eps":
    eps, x0 = out_NxC, predict_x0_from_eps(schedule, x_t_NxC, t_N, out_NxC)
  else:
    eps = eps_from_v(schedule, x_t_NxC, t_N, out_NxC)
    x0 = x0_from_v(schedule, x_t_NxC, t_N, out_NxC)
  if threshold is not None:
    if clip_x0 is None:
      raise ValueError("dynamic thresholding needs a bound (clip_x0)")
    x0 = dynamic_threshold(x0, threshold, clip_x0)
  elif clip_x0 is not None:
    x0 = jnp.clip(x0, -clip_x0, clip_x0)
  if x0_range is not None:
    lo, hi = (jnp.reshape(a, (1,) * (x0.ndim - 1) + (-1,)) for a in x0_range)
    x0 = jnp.clip(x0, lo, hi)
  if threshold is not None or clip_x0 is not None or x0_range is not None:
    eps = predict_eps_from_x0(schedule, x_t_NxC, t_N, x0)
  return x0, eps


def _check_prediction(prediction: str) -> None:
  if prediction not in _PREDICTIONS:
    raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {prediction!r}")


# ----------------------------------------------------------------------------------------------
# Training loss.
# ----------------------------------------------------------------------------------------------


def diffusion_loss_terms(
    denoise_fn: LossDenoiseFn,
    schedule: Schedule,
    x0_NxC: Array,
    z_NxD: Array,
    weight_N: Array | None,
    rng: Array,
    *,
    batch_mul: int = 1,
    prediction: str = "eps",
    remat: bool = False,
) -> tuple[Array, Array]:
  """(sum of w * loss, sum of w) over the denoiser's rows, float32 scalars.

  Each token is used `batch_mul` times with independent timesteps (uniform over the schedule's
  steps) and noise, with the same conditioning z and weight: the denoiser runs once per draw on
  the N tokens (all draws at once, vmapped). The per-row loss is the mean over C of the squared
  error of the eps (or v) prediction.

  With `remat`, the draws run one at a time in a scan whose body keeps nothing for the backward
  pass but its inputs: the denoiser's activations of N rows live at a time instead of
  batch_mul * N (the same sums, up to float summation order).

  `rng` is one key, or one key per token ([N] keys): then token n's timesteps and noise depend on
  its own key only, so a caller that splits a batch into parts (gradient accumulation, devices)
  draws exactly what the whole batch would. The sums let such a caller normalize by a count taken
  over the whole batch.
  """
  _check_prediction(prediction)
  n = x0_NxC.shape[0]
  keys_N = rng_lib.row_keys(rng, n)

  def draw(key):
    t_rng, noise_rng = jax.random.split(key)
    return (jax.random.randint(t_rng, (batch_mul,), 0, schedule.num_steps),
            jax.random.normal(noise_rng, (batch_mul, x0_NxC.shape[-1]), jnp.float32))

  t_NxR, noise_NxRxC = jax.vmap(draw)(keys_N)
  w_N = jnp.ones((n,), jnp.float32) if weight_N is None else weight_N.astype(jnp.float32)
  # Each draw's rows stay split by token over the batch axes (see `sharding.shard_rows`).
  x0_NxC = sharding.shard_rows(x0_NxC.astype(jnp.float32))
  z_NxD = sharding.shard_rows(z_NxD)

  def one_draw(t_N, noise_NxC):
    x_t_NxC = q_sample(schedule, x0_NxC, t_N, noise_NxC)
    out_NxC = denoise_fn(x_t_NxC, schedule.timesteps[t_N], z_NxD).astype(jnp.float32)
    target_NxC = (noise_NxC if prediction == "eps"
                  else v_from_x0_eps(schedule, x0_NxC, t_N, noise_NxC))
    return jnp.sum(w_N * jnp.mean(jnp.square(out_NxC - target_NxC), axis=-1))

  draws = (t_NxR.T, noise_NxRxC.swapaxes(0, 1))
  if remat:
    body = jax.checkpoint(one_draw)
    _, per_draw_R = jax.lax.scan(lambda carry, d: (carry, body(*d)), None, draws)
  else:
    per_draw_R = jax.vmap(one_draw)(*draws)
  return jnp.sum(per_draw_R), batch_mul * jnp.sum(w_N)


def diffusion_loss(
    denoise_fn: LossDenoiseFn,
    schedule: Schedule,
    x0_NxC: Array,
    z_NxD: Array,
    weight_N: Array | None,
    rng: Array,
    *,
    batch_mul: int = 1,
    prediction: str = "eps",
) -> Array:
  """Weighted mean squared error of the denoiser's eps (or v) prediction, float32 scalar.

  sum(w * loss) / sum(w) of `diffusion_loss_terms` (weight_N=None means all ones; all-zero
  weights give 0).
  """
  total, weight = diffusion_loss_terms(denoise_fn, schedule, x0_NxC, z_NxD, weight_N, rng,
                                       batch_mul=batch_mul, prediction=prediction)
  return total / jnp.maximum(weight, 1e-8)


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance.
# ----------------------------------------------------------------------------------------------


def cfg_scale_at(
    progress: float | Array, scale: float | Array, schedule: str = "constant"
) -> Array:
  """Guidance scale at generation progress in [0, 1] (the fraction of tokens already produced).

  'constant' returns `scale`; 'linear' ramps from 1 at progress 0 to `scale` at progress 1
  (1 + (scale - 1) * progress). `scale` may be a per-example array; the result is float32.
  """
  progress = jnp.asarray(progress, jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  if schedule == "constant":
    return scale + jnp.zeros_like(progress)
  if schedule == "linear":
    return 1.0 + (scale - 1.0) * progress
  raise ValueError(f"unknown cfg schedule {schedule!r}")


def guided(cond_Nx: Array, uncond_Nx: Array, scale: float | Array) -> Array:
  """Classifier-free guidance: uncond + scale * (cond - uncond), in float32.

  The one guidance formula: the head's outputs (eps or v) and the discrete baseline's logits
  both go through it. `scale` is a scalar or a per-example [N] array; scale 1 returns `cond`
  exactly. The combination is affine, so it is valid on eps and on v alike provided both halves
  share x_t.
  """
  cond_Nx, uncond_Nx = cond_Nx.astype(jnp.float32), uncond_Nx.astype(jnp.float32)
  s_Nx = _per_example(scale, cond_Nx)
  return jnp.where(s_Nx == 1.0, cond_Nx, uncond_Nx + s_Nx * (cond_Nx - uncond_Nx))


def guide(out_2NxC: Array, scale: float | Array) -> Array:
  """`guided` on a batch whose first half is conditional, second unconditional, written into both
  halves ([2N, C]), so that a sampler that keeps both halves in one batch sees identical updates.
  """
  cond_NxC, uncond_NxC = jnp.split(out_2NxC, 2, axis=0)
  guided_NxC = guided(cond_NxC, uncond_NxC, scale)
  return jnp.concatenate([guided_NxC, guided_NxC], axis=0)


def with_cfg(
    denoise_fn: LossDenoiseFn, z_cond_NxD: Array, z_uncond_NxD: Array, scale: float | Array
) -> SampleFn:
  """Wraps `denoise_fn(x_t, t, z)` into a guided sampler function `(x_t_NxC, t_N) -> out_NxC`.

  Each call runs the network once on a 2N batch ([cond; uncond], both at the same x_t) and
  returns the guided output for the N rows.
  """

  def fn(x_t_NxC: Array, t_N: Array) -> Array:
    x_2NxC = jnp.concatenate([x_t_NxC, x_t_NxC], axis=0)
    t_2N = jnp.concatenate([t_N, t_N], axis=0)
    z_2NxD = jnp.concatenate([z_cond_NxD, z_uncond_NxD], axis=0)
    out_2NxC = denoise_fn(x_2NxC, t_2N, z_2NxD)
    return guide(out_2NxC, scale)[: x_t_NxC.shape[0]]

  return fn


# ----------------------------------------------------------------------------------------------
# Reverse samplers.
# ----------------------------------------------------------------------------------------------


def _initial_noise(x_T_or_shape: Array | Sequence[int], rng: Array) -> tuple[Array, Array]:
  init_rng, rng = jax.random.split(rng)
  if isinstance(x_T_or_shape, (tuple, list)):
    return jax.random.normal(init_rng, tuple(x_T_or_shape), jnp.float32), rng
  return jnp.asarray(x_T_or_shape, jnp.float32), rng


def _reverse_scan(step_fn, schedule: Schedule, x_T: Array, rng: Array) -> Array:
  """Runs step_fn(x, k, rng) for k = K-1 .. 0 in one lax.scan."""
  k_K = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)
  rngs_K = jax.random.split(rng, schedule.num_steps)

  def body(x, k_and_rng):
    k, step_rng = k_and_rng
    return step_fn(x, k, step_rng), None

  x0, _ = jax.lax.scan(body, x_T, (k_K, rngs_K))
  return x0


def ddpm_sample(
    denoise_fn: SampleFn,
    schedule: Schedule,
    x_T_or_shape: Array | Sequence[int],
    rng: Array,
    *,
    temperature: float | Array = 1.0,
    prediction: str = "eps",
    variance: str = "small",
    clip_x0: float | None = None,
    threshold: float | None = None,
    x0_range: tuple[Array, Array] | None = None,
) -> Array:
  """Ancestral DDPM sampling over all steps of `schedule` (usually a respaced one).

  x_{k-1} = posterior_mean(x0_hat, x_k) + temperature * sigma_k * noise, with no noise on the
  last step. sigma_k^2 is the posterior variance ('small') or beta_k ('large', with the first
  entry replaced by the posterior variance of step 1, as improved DDPM does). `temperature` is a
  scalar or per-example [N] array that scales only the per-step noise (MAR's convention);
  the initial x_T is never scaled. Pass a shape to draw x_T ~ N(0, I) from `rng`.
  `clip_x0` clips the x0 estimate to [-clip_x0, clip_x0] at every step (off by default; with
  eps prediction an imperfect network may need it, see `predict_x0_from_eps`); with `threshold`
  the bound is applied by `dynamic_threshold`; `x0_range` (lo_C, hi_C) clips each channel.
  Returns float32 samples with x_T's shape.
  """
  _check_prediction(prediction)
  if variance == "small":
    log_var_K = schedule.posterior_log_variance_clipped
  elif variance == "large":
    log_var_K = jnp.log(jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))
  else:
    raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
  x_T, rng = _initial_noise(x_T_or_shape, rng)
  temp = _per_example(temperature, x_T)

  def step(x, k, step_rng):
    k_N = jnp.full(x.shape[:1], k, jnp.int32)
    out = denoise_fn(x, schedule.timesteps[k_N])
    x0, _ = x0_eps_from_output(schedule, x, k_N, out, prediction, clip_x0, threshold,
                               x0_range)
    mean, _, _ = posterior_mean_variance(schedule, x0, x, k_N)
    sigma = jnp.exp(0.5 * log_var_K[k]) * (k > 0)
    noise = jax.random.normal(step_rng, x.shape, jnp.float32)
    return mean + sigma * temp * noise

  return _reverse_scan(step, schedule, x_T, rng)


def ddim_sample(
    denoise_fn: SampleFn,
    schedule: Schedule,
    x_T_or_shape: Array | Sequence[int],
    rng: Array,
    *,
    eta: float = 0.0,
    temperature: float | Array = 1.0,
    prediction: str = "eps",
    clip_x0: float | None = None,
    threshold: float | None = None,
    x0_range: tuple[Array, Array] | None = None,
) -> Array:
  """DDIM sampling over all steps of `schedule` (Song et al.).

  x_{k-1} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + temperature * sigma * z
  with sigma = eta * sqrt((1 - ab_prev) / (1 - ab)) * sqrt(1 - ab / ab_prev). eta = 0 is
  deterministic (temperature then has no effect); eta = 1 matches `ddpm_sample` with
  variance='small'. Conventions for temperature and x_T as in `ddpm_sample`.
  """
  _check_prediction(prediction)
  x_T, rng = _initial_noise(x_T_or_shape, rng)
  temp = _per_example(temperature, x_T)

  def step(x, k, step_rng):
    k_N = jnp.full(x.shape[:1], k, jnp.int32)
    out = denoise_fn(x, schedule.timesteps[k_N])
    x0, eps = x0_eps_from_output(schedule, x, k_N, out, prediction, clip_x0, threshold,
                               x0_range)
    ab, ab_prev = schedule.alphas_cumprod[k], schedule.alphas_cumprod_prev[k]
    sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab)) * jnp.sqrt(1.0 - ab / ab_prev)
    mean = jnp.sqrt(ab_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps
    noise = jax.random.normal(step_rng, x.shape, jnp.float32)
    return mean + (sigma * (k > 0)) * temp * noise

  return _reverse_scan(step, schedule, x_T, rng)


class Solver(NamedTuple):
  """A reverse process of the head: `sample(denoise_fn, schedule, x_T_or_shape, rng, *,
  temperature, prediction, clip_x0, threshold, x0_range, **options)`, and the names of the
  sampling settings it takes besides those (`options`)."""
  sample: Callable[..., Array]
  options: tuple[str, ...] = ()


# The head's solvers by name: the sampling settings' check and the sampler's step both read this
# table, so a new solver is one function and one row.
SOLVERS = {
    "ddpm": Solver(ddpm_sample),
    "ddim": Solver(ddim_sample, ("eta",)),
}
