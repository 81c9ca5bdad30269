"""The KV-cache sampler: teacher-forced consistency, determinism, CFG at scale 1, continuation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from almtok import diffusion
from almtok import models
from almtok import sample
from almtok.models import mntp
from tests.tiny import B, C, L, random_text, tiny_config


@pytest.fixture(scope="module")
def model():
  model = models.build(tiny_config(), nnx.Rngs(0))
  # Non-zero head outputs: perturb the zero-initialised layers so sampling depends on z.
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  leaves = [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def make_sampler(model, **settings):
  settings = dict(dict(solver_steps=8, cfg_scale=2.0, prediction="eps"), **settings)
  return sample.Sampler(model, diffusion.cosine_schedule(1000), sample.SamplerSettings(**settings))


@pytest.fixture(scope="module")
def text():
  return random_text(jax.random.PRNGKey(0))


def test_teacher_forced_z_matches_sampling(model, text):
  sampler = make_sampler(model)
  x, z = sampler.generate(text, L, jax.random.PRNGKey(1), chunk=5, progress=False,
                          return_z=True)
  assert x.shape == (B, L, C) and z.shape == (B, L, model.decoder.width)
  assert np.all(np.isfinite(x))
  z_tf, _ = model(text, jnp.zeros((B,), bool), jnp.asarray(x), mntp.ntp_slots(jnp.ones((B, L),
                                                                                      bool)))
  np.testing.assert_allclose(z, z_tf, atol=5e-5, rtol=5e-5)


def test_fixed_seed_is_deterministic_and_seeds_differ(model, text):
  sampler = make_sampler(model)
  a = sampler.generate(text, L, jax.random.PRNGKey(3), chunk=5, progress=False)
  b = sampler.generate(text, L, jax.random.PRNGKey(3), chunk=5, progress=False)
  c = sampler.generate(text, L, jax.random.PRNGKey(4), chunk=5, progress=False)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_cfg_scale_one_equals_conditional_only(model, text):
  guided = make_sampler(model, cfg=True, cfg_scale=1.0)
  plain = make_sampler(model, cfg=False)
  a = guided.generate(text, L, jax.random.PRNGKey(5), chunk=6, progress=False)
  b = plain.generate(text, L, jax.random.PRNGKey(5), chunk=6, progress=False)
  np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  c = make_sampler(model, cfg=True, cfg_scale=4.0, cfg_schedule="constant").generate(
      text, L, jax.random.PRNGKey(5), chunk=6, progress=False)
  assert not np.allclose(a, c, atol=1e-3)


def test_continuation_keeps_the_prompt(model, text):
  sampler = make_sampler(model)
  prompt = jax.random.normal(jax.random.PRNGKey(6), (B, 4, C))
  x, z = sampler.generate(text, L, jax.random.PRNGKey(7), prompt_BxPxC=prompt, chunk=5,
                          progress=False, return_z=True)
  np.testing.assert_array_equal(x[:, :4], prompt)
  assert z.shape[1] == L - 4
  z_tf, _ = model(text, jnp.zeros((B,), bool), jnp.asarray(x), mntp.ntp_slots(jnp.ones((B, L),
                                                                                      bool)))
  np.testing.assert_allclose(z, z_tf[:, 4:], atol=5e-5, rtol=5e-5)


def test_sliding_window_extends_beyond_the_context(model, text):
  # 12-token context, stride 5: windows of 12 keep the newest 7 tokens as the next prompt.
  sampler, rng, stride = make_sampler(model), jax.random.PRNGKey(8), 5
  total = 2 * L + 3
  x = sampler.generate(text, total, rng, chunk=5, progress=False, stride=stride)
  assert x.shape == (B, total, C) and np.all(np.isfinite(x))
  first = sampler.generate(text, L, jax.random.fold_in(rng, 0), chunk=5, progress=False)
  np.testing.assert_array_equal(x[:, :L], first)
  # Each later window continues the last window's newest L - stride tokens.
  keep, done = L - stride, L
  while done < total:
    n = min(L, keep + total - done)
    window = sampler.generate(text, n, jax.random.fold_in(rng, done), chunk=5, progress=False,
                              prompt_BxPxC=x[:, done - keep:done])
    np.testing.assert_array_equal(x[:, done:done + n - keep], window[:, keep:])
    done += n - keep
  with pytest.raises(ValueError, match="stride 12 must be in"):
    sampler.generate(text, total, rng, progress=False, stride=L)


def test_too_long_and_bad_settings_fail_clearly(model, text):
  sampler = make_sampler(model)
  with pytest.raises(ValueError, match="exceed the model's context of 12"):
    sampler.generate(text, L + 1, jax.random.PRNGKey(0), progress=False)
  with pytest.raises(ValueError, match="solver='euler'"):
    sample.SamplerSettings(solver="euler")
  with pytest.raises(ValueError, match="solver_steps=0"):
    sample.SamplerSettings(solver_steps=0)


def test_dynamic_threshold_bounds_rows_and_keeps_their_shape():
  rng = np.random.default_rng(0)
  calm = rng.standard_normal((1, 256)).astype(np.float32)      # Within the bound: only clipped.
  loud = 40.0 * rng.standard_normal((1, 256)).astype(np.float32)  # Far beyond it.
  x0 = jnp.asarray(np.concatenate([calm, loud]))
  out = np.asarray(diffusion.dynamic_threshold(x0, 0.99, 3.0))
  assert np.abs(out).max() <= 3.0 + 1e-6
  np.testing.assert_allclose(out[0], np.clip(calm[0], -3, 3), rtol=1e-6)
  # The loud row is scaled as a whole (entries below its 99th percentile keep their ratios).
  s = np.quantile(np.abs(loud[0]), 0.99)
  inside = np.abs(loud[0]) < s
  np.testing.assert_allclose(out[1][inside], loud[0][inside] * 3.0 / s, rtol=1e-5)


def test_thresholding_keeps_a_strongly_guided_chain_within_its_bound(model, text):
  # CFG scale 50 on the tiny model drives the x0 estimates far beyond the data's scale; the last
  # reverse step returns the x0 estimate itself, so every sampled token must lie within the bound.
  unbounded = make_sampler(model, cfg_scale=50.0, cfg_schedule="constant", clip_x0=None)
  x = unbounded.generate(text, L, jax.random.PRNGKey(2), chunk=5, progress=False)
  assert np.abs(x).max() > 10.0
  for settings in (dict(threshold=0.99, clip_x0=2.0), dict(clip_x0=2.0)):
    bounded = make_sampler(model, cfg_scale=50.0, cfg_schedule="constant", **settings)
    x = bounded.generate(text, L, jax.random.PRNGKey(2), chunk=5, progress=False)
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 2.0 + 1e-4, (settings, np.abs(x).max())


def test_data_range_keeps_each_channel_within_its_training_range(model, text):
  lo_C = -np.linspace(0.5, 2.0, C).astype(np.float32)
  hi_C = np.linspace(0.2, 1.5, C).astype(np.float32)
  bounded = sample.Sampler(model, diffusion.cosine_schedule(1000), sample.SamplerSettings(
      solver_steps=8, cfg_scale=50.0, cfg_schedule="constant", prediction="eps"), (lo_C, hi_C))
  x = bounded.generate(text, L, jax.random.PRNGKey(2), chunk=5, progress=False)
  assert np.all(x >= lo_C - 1e-4) and np.all(x <= hi_C + 1e-4)
  assert np.any(x <= lo_C + 1e-4) and np.any(x >= hi_C - 1e-4)  # The guidance pushes to both.
  off = sample.Sampler(model, diffusion.cosine_schedule(1000), sample.SamplerSettings(
      solver_steps=8, cfg_scale=50.0, cfg_schedule="constant", prediction="eps", data_range=False),
      (lo_C, hi_C))
  assert off.x0_range is None
