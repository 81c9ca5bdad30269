"""Tests for almtok.models.denoiser, alone and trained end to end with almtok.diffusion.

Shape letters: N tokens, C token channels, D conditioning width, W denoiser width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from almtok import diffusion
from almtok.models.denoiser import Denoiser, timestep_features

C, D, W, DEPTH, FREQ = 3, 5, 32, 2, 16


def _inputs(n=16, seed=0):
  r1, r2, r3 = jax.random.split(jax.random.key(seed), 3)
  x_NxC = jax.random.normal(r1, (n, C))
  t_N = jax.random.randint(r2, (n,), 0, 1000)
  z_NxD = jax.random.normal(r3, (n, D))
  return x_NxC, t_N, z_NxD


def _make(dtype=jnp.float32, seed=0):
  # Jitted construction and calls: eager initialisers and ops would each compile on their own.
  return nnx.jit(lambda: Denoiser(C, D, W, DEPTH, freq_dim=FREQ, dtype=dtype,
                                  rngs=nnx.Rngs(seed)))()


def _leaves_by_path(tree):
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_timestep_features_known_values():
  feats = timestep_features(jnp.array([0, 3]), 8)
  assert feats.shape == (2, 8) and feats.dtype == jnp.float32
  np.testing.assert_allclose(feats[0], [1, 1, 1, 1, 0, 0, 0, 0])
  freqs = 10000.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(feats[1], np.concatenate([np.cos(3 * freqs), np.sin(3 * freqs)]),
                             rtol=1e-6, atol=1e-6)
  assert timestep_features(jnp.array([1.5]), 7).shape == (1, 7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fresh_denoiser_outputs_exact_zeros(dtype):
  model = _make(dtype)
  out_NxC = nnx.jit(lambda m, *args: m(*args))(model, *_inputs())
  assert out_NxC.shape == (16, C) and out_NxC.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out_NxC), 0.0)
  for leaf in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)):
    assert leaf.dtype == jnp.float32


def test_param_count_under_eval_shape_matches_formula():
  abstract = nnx.eval_shape(lambda: Denoiser(C, D, W, DEPTH, freq_dim=FREQ, rngs=nnx.Rngs(0)))
  leaves = jax.tree_util.tree_leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
  count = sum(int(np.prod(leaf.shape)) for leaf in leaves)
  linear = lambda i, o: i * o + o
  want = (linear(FREQ, W) + linear(W, W)          # timestep embedder
          + linear(D, W) + linear(C, W)           # condition and input projections
          + DEPTH * (2 * linear(W, W) + linear(W, 3 * W))  # residual blocks (no-affine norms)
          + linear(W, 2 * W) + linear(W, C))      # final adaLN and output
  assert count == want


def test_gradients_flow_where_expected():
  model = _make(seed=1)
  graphdef, params = nnx.split(model, nnx.Param)
  x_NxC, t_N, z_NxD = _inputs(seed=2)
  target_NxC = jax.random.normal(jax.random.key(3), (16, C))

  @jax.jit
  def grad_fn(p):
    def loss(p):
      return jnp.mean(jnp.square(nnx.merge(graphdef, p)(x_NxC, t_N, z_NxD) - target_NxC))
    return jax.grad(loss)(p)

  # At init only the output layer can move the output (everything else is gated by zeros).
  grads = _leaves_by_path(grad_fn(params))
  for path, g in grads.items():
    nonzero = bool(jnp.any(g != 0))
    assert nonzero == ("final" in path and "linear" in path), path
  # After two plain SGD steps the zeros are gone and every parameter receives gradient.
  for _ in range(2):
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grad_fn(params))
  for path, g in _leaves_by_path(grad_fn(params)).items():
    assert bool(jnp.any(g != 0)), path


def test_guided_sampling_with_the_denoiser_jits():
  model = _make(seed=3)
  schedule = diffusion.respace(diffusion.cosine_schedule(1000), 8)
  n = 6
  z_cond_NxD = jax.random.normal(jax.random.key(4), (n, D))

  @nnx.jit
  def sample(model, scale_N, temperature_N, rng):
    fn = diffusion.with_cfg(model, z_cond_NxD, jnp.zeros_like(z_cond_NxD), scale_N)
    return diffusion.ddpm_sample(fn, schedule, (n, C), rng, temperature=temperature_N)

  x_NxC = sample(model, jnp.linspace(1.0, 4.0, n), jnp.full((n,), 0.9), jax.random.key(5))
  assert x_NxC.shape == (n, C) and x_NxC.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(x_NxC)))


# ------------------------------------------------------------------------------------------------
# End to end: learn a 2-D Gaussian mixture and sample it.
# ------------------------------------------------------------------------------------------------

MODES_Kx2 = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
WEIGHTS_K = np.array([0.4, 0.3, 0.2, 0.1])
MODE_STD = 0.15


def _mixture(rng, n):
  r1, r2 = jax.random.split(rng)
  k_N = jax.random.categorical(r1, jnp.log(jnp.asarray(WEIGHTS_K)), shape=(n,))
  return jnp.asarray(MODES_Kx2, jnp.float32)[k_N] + MODE_STD * jax.random.normal(r2, (n, 2))


@pytest.fixture(scope="module")
def mixture_samples():
  batch, steps, num_samples = 256, 800, 4000
  schedule = diffusion.cosine_schedule(1000)
  model = Denoiser(2, 1, 64, 2, freq_dim=32, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = optax.adam(optax.cosine_decay_schedule(5e-3, steps, alpha=0.05))
  z_Nx1 = jnp.zeros((batch, 1))

  def loss_fn(p, rng):
    data_rng, loss_rng = jax.random.split(rng)
    return diffusion.diffusion_loss(nnx.merge(graphdef, p), schedule, _mixture(data_rng, batch),
                                    z_Nx1, None, loss_rng, batch_mul=4, prediction="eps")

  @jax.jit
  def train(p, rng):
    def step(carry, i):
      p, opt_state = carry
      loss, g = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(rng, i))
      updates, opt_state = tx.update(g, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), loss
    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), jnp.arange(steps))
    return p, losses

  params, losses = train(params, jax.random.key(1))

  @jax.jit
  def sample(p, rng):
    net = nnx.merge(graphdef, p)
    fn = lambda x_t, t: net(x_t, t, jnp.zeros((x_t.shape[0], 1)))
    # A tiny network's eps error is amplified ~1e4x into x0 at the last (beta = 0.999) cosine
    # step; clipping x0 to the data's range keeps the first reverse steps sane.
    return diffusion.ddpm_sample(fn, diffusion.respace(schedule, 50), (num_samples, 2), rng,
                                 clip_x0=3.0)

  return np.asarray(losses), np.asarray(sample(params, jax.random.key(2)), np.float64)


def test_training_reduces_loss(mixture_samples):
  losses, _ = mixture_samples
  assert np.all(np.isfinite(losses))
  assert losses[-100:].mean() < 0.5 * losses[:20].mean()


def test_samples_match_mixture(mixture_samples):
  _, x_Nx2 = mixture_samples
  dist_NxK = np.linalg.norm(x_Nx2[:, None, :] - MODES_Kx2[None, :, :], axis=-1)
  nearest_N = dist_NxK.argmin(axis=1)
  # Almost every sample lies on a mode (4 standard deviations is 0.6).
  assert np.mean(dist_NxK.min(axis=1) > 0.6) < 0.02
  weights_K = np.bincount(nearest_N, minlength=4) / len(x_Nx2)
  np.testing.assert_allclose(weights_K, WEIGHTS_K, atol=0.04)
  for k in range(4):
    on_mode = x_Nx2[(nearest_N == k) & (dist_NxK[:, k] < 0.6)]
    np.testing.assert_allclose(on_mode.mean(axis=0), MODES_Kx2[k], atol=0.08)
    np.testing.assert_allclose(on_mode.std(axis=0), MODE_STD, rtol=0.3)
