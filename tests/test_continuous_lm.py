"""The continuous LM: causality, KV-cache decoding, MNTP invariants, CFG, sizes, overfitting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from almtok import diffusion
from almtok import models
from almtok.models import audio_lm
from almtok.models import continuous_lm
from almtok.models import mntp
from configs import continuous_lm as lm_config

from tests.tiny import B, C, L, random_text, tiny_config


@pytest.fixture(scope="module")
def model():
  return models.build(tiny_config(), nnx.Rngs(0))


def no_null(b=B):
  return jnp.zeros((b,), bool)


def test_param_counts_match_the_paper():
  from almtok import param_count  # pylint: disable=g-import-not-at-top
  for preset, target in (("base", 193e6), ("large", 462e6)):
    total = param_count.count(lm_config.get_config(preset))["total"]
    assert abs(total / target - 1) < 0.03, (preset, total)


def _z_of_x(model, text, slots):
  def f(x):
    z, _ = model(text, no_null(), x, slots)
    return z
  return f


# The model's passes as programs (one compile each, where eager calls compile every operation).
@nnx.jit
def _forward(model, text, x, slots):
  return model(text, no_null(), x, slots)


@nnx.jit
def _prompt_then_step(model, text, prev):
  """z of the first 5 tokens decoded in one call on the prefix's cache, then z of token 5."""
  cache = model.prefill(text, no_null(), model.init_cache(B, L))
  z_prompt, cache = model.decode(prev[:, :5], jnp.int32(0), cache)
  z_next, _ = model.step(prev[:, 5], jnp.int32(5), cache)
  return z_prompt, z_next


@pytest.mark.parametrize("use_mntp", [False, True])
def test_causality_by_gradient(model, use_mntp):
  rng = jax.random.PRNGKey(1)
  x = jax.random.normal(rng, (B, L, C))
  mask = jnp.ones((B, L), bool)
  if use_mntp:
    slots = mntp.mntp_slots(jax.random.PRNGKey(2), mask, jnp.array([0.5, 0.8]))
  else:
    slots = mntp.ntp_slots(mask)
  text = random_text(rng)
  # d z[b, j, :] / d x[b', l, :] for all pairs at once, reduced to one magnitude per (b, j, l).
  jac = jax.jit(jax.jacrev(_z_of_x(model, text, slots)))(x)  # [B, L, D, B, L, C]
  jac = np.abs(np.asarray(jac)).sum(axis=(2, 5))  # [B, L, B, L]
  for j in range(L):
    for b in range(B):
      g_per_pos = jac[b, j, b]
      assert np.all(jac[b, j, 1 - b] == 0.0)  # Examples never mix.
      if not slots.valid_BxL[b, j]:
        continue
      src = int(slots.src_BxL[b, j])
      seen = set(np.asarray(slots.src_BxL[b, :j + 1]).tolist()) - {-1}
      target = src + int(slots.offset_BxL[b, j])
      assert target > src
      for pos in range(L):
        if pos in seen:
          continue
        # Nothing the slot did not read (its target and every later or dropped token) matters.
        assert g_per_pos[pos] == 0.0, (b, j, pos)
      if src >= 0:
        assert g_per_pos[src] > 0.0


def test_kv_cache_decoding_equals_teacher_forcing(model):
  rng = jax.random.PRNGKey(3)
  x = jax.random.normal(rng, (B, L, C))
  text = random_text(rng)
  z_full, _ = _forward(model, text, x, mntp.ntp_slots(jnp.ones((B, L), bool)))

  @nnx.jit
  def decode_one_by_one(model, text, x):
    cache = model.prefill(text, no_null(), model.init_cache(B, L))
    prev = jnp.concatenate([jnp.zeros((B, 1, C)), x[:, :-1]], axis=1)
    def body(cache, inp):
      prev_BxC, index = inp
      z, cache = model.step(prev_BxC, index, cache)
      return cache, z
    _, z_LxBxD = jax.lax.scan(body, cache, (prev.swapaxes(0, 1), jnp.arange(L)))
    return z_LxBxD.swapaxes(0, 1)

  z_steps = decode_one_by_one(model, text, x)
  np.testing.assert_allclose(z_steps, z_full, atol=2e-5, rtol=2e-5)
  # A prompt of 5 tokens decoded in one call, then steps, gives the same z again.
  prev = jnp.concatenate([jnp.zeros((B, 1, C)), x[:, :-1]], axis=1)
  z_prompt, z_next = _prompt_then_step(model, text, prev)
  np.testing.assert_allclose(z_prompt, z_full[:, :5], atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(z_next, z_full[:, 5], atol=2e-5, rtol=2e-5)


def test_a_scanned_decoder_stack_is_the_same_model(model):
  # The tiny model with its blocks stacked on a leading layer axis and run by a scan: the same
  # parameters give the same z, teacher-forced and decoded from the KV cache.
  config = tiny_config()
  config.unlock()
  config.model.decoder.scan_layers = True
  scanned = models.build(config, nnx.Rngs(1))
  blocks = [nnx.state(block, nnx.Param) for block in model.decoder.blocks]
  nnx.update(scanned.decoder.layers, jax.tree.map(lambda *p: jnp.stack(p), *blocks))
  rest = {k: v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
          if k[:2] != ("decoder", "blocks")}
  nnx.update(scanned, nnx.from_flat_state(rest))
  kernel = nnx.state(scanned, nnx.Param)["decoder"]["layers"]["attn"]["qkv"]["kernel"]
  assert kernel.shape == (config.model.decoder.num_layers, 64, 192)
  rng = jax.random.PRNGKey(4)
  x, text = jax.random.normal(rng, (B, L, C)), random_text(rng)
  slots = mntp.ntp_slots(jnp.ones((B, L), bool))
  z_want, _ = _forward(model, text, x, slots)
  z_got, _ = _forward(scanned, text, x, slots)
  np.testing.assert_allclose(z_got, z_want, atol=2e-5, rtol=2e-5)
  prev = jnp.concatenate([jnp.zeros((B, 1, C)), x[:, :-1]], axis=1)
  z_prompt, z_next = _prompt_then_step(scanned, text, prev)
  np.testing.assert_allclose(z_prompt, z_want[:, :5], atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(z_next, z_want[:, 5], atol=2e-5, rtol=2e-5)


def test_mntp_with_ratio_zero_is_ntp():
  mask = jnp.arange(L)[None, :] < jnp.array([L, 7])[:, None]
  got = mntp.mntp_slots(jax.random.PRNGKey(0), mask, jnp.zeros((B,)))
  want = mntp.ntp_slots(mask)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, L, C))
  inputs, targets = mntp.inputs_and_targets(x, got)
  np.testing.assert_array_equal(targets[0], x[0])
  np.testing.assert_array_equal(inputs[0, 1:], x[0, :-1])
  np.testing.assert_array_equal(inputs[0, 0], 0.0)


def test_mntp_invariants():
  b, l = 64, 40
  lengths = jax.random.randint(jax.random.PRNGKey(0), (b,), 1, l + 1)
  mask = jnp.arange(l)[None, :] < lengths[:, None]
  ratio = jax.random.uniform(jax.random.PRNGKey(1), (b,))
  slots = mntp.mntp_slots(jax.random.PRNGKey(2), mask, ratio)
  src, off, valid = (np.asarray(a) for a in slots)
  for i in range(b):
    n = int(lengths[i])
    v = valid[i]
    k = int(v.sum())
    # Dropped tokens are removed: valid slots come first and their count is 1 + kept.
    assert v[:k].all() and not v[k:].any()
    assert k - 1 == (n - 1) - int(np.floor(float(ratio[i]) * (n - 1)))
    s = src[i, :k]
    assert s[0] == -1 and np.all(np.diff(s) > 0) and s[-1] <= n - 2
    tgt = s + off[i, :k]
    assert np.all(off[i, :k] >= 1) and np.all(tgt < n)
    # Each target lies after its source and no later than the next slot's source.
    assert np.all(tgt[:-1] <= s[1:])
    assert tgt[-1] <= n - 1


def test_mntp_targets_cover_the_gap_uniformly():
  mask = jnp.ones((4000, 10), bool)
  slots = mntp.mntp_slots(jax.random.PRNGKey(5), mask, jnp.full((4000,), 0.5))
  # Slot 0 (start-of-audio) has range (-1, src_1]: offsets 1 .. src_1 + 1, uniform.
  span = np.asarray(slots.src_BxL[:, 1]) + 1
  rows = span == 3
  counts = np.bincount(np.asarray(slots.offset_BxL[rows, 0]), minlength=4)[1:]
  assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.05)


def test_drop_ratio_mixture_modes():
  mixture = ((0.5, 4.0, 1.5), (0.5, 1.5, 6.0))
  r = np.asarray(mntp.sample_drop_ratio(jax.random.PRNGKey(0), 20000, mixture))
  assert np.all((r >= 0) & (r <= 1))
  expected_mean = 0.5 * 4 / 5.5 + 0.5 * 1.5 / 7.5
  assert abs(r.mean() - expected_mean) < 0.01
  assert (r > 0.6).mean() > 0.3 and (r < 0.3).mean() > 0.3  # Two modes.


def test_null_prefix_replaces_text(model):
  text_a = random_text(jax.random.PRNGKey(0))
  text_b = random_text(jax.random.PRNGKey(1))
  use_null = jnp.array([True, False])
  ha, ma = model.prefix(text_a, use_null)
  hb, mb = model.prefix(text_b, use_null)
  np.testing.assert_array_equal(ha[0], hb[0])
  np.testing.assert_array_equal(ha[0], model.null_prefix[...])
  assert bool(ma[0].all())
  assert not np.allclose(ha[1], hb[1])
  np.testing.assert_array_equal(mb[1], jnp.concatenate([jnp.ones(1, bool), text_b.mask_BxN[1]]))


def test_cfg_dropout_frequency():
  b = 20000
  for p in (0.0, 0.1, 0.3):
    frac = float(jnp.mean(audio_lm.cfg_drop_mask(jax.random.PRNGKey(7), b, p)))
    assert abs(frac - p) <= 3 * np.sqrt(p * (1 - p) / b)


def test_loss_parts_and_zero_head():
  config = tiny_config()
  model = models.build(config, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (B, L, C))
  kw = dict(loss=audio_lm.LossConfig.from_config(config.loss))
  # Jitted: one compile instead of many eager ones.
  loss, metrics = nnx.jit(lambda model, x: continuous_lm.loss_fn(
      model, random_text(jax.random.PRNGKey(1)), x, jnp.ones((B, L), bool),
      jax.random.PRNGKey(2), schedule=diffusion.cosine_schedule(1000), batch_mul=4,
      prediction="eps", **kw))(model, x)
  # The zero-initialised head predicts eps = 0, so each part is E[eps^2] = 1 up to sampling.
  assert set(metrics) >= {"loss", "ntp_loss", "mntp_loss", "mntp_kept_frac", "cfg_drop_frac"}
  assert abs(float(metrics["ntp_loss"]) - 1) < 0.15 and abs(float(metrics["mntp_loss"]) - 1) < 0.15
  np.testing.assert_allclose(loss, metrics["ntp_loss"] + config.loss.mntp_weight *
                             metrics["mntp_loss"], rtol=1e-6)


def test_tiny_model_overfits_one_batch():
  config = tiny_config(cfg_dropout=0.0)
  model = models.build(config, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (B, L, C))
  text = random_text(jax.random.PRNGKey(1))
  mask = jnp.ones((B, L), bool)
  schedule = diffusion.cosine_schedule(1000)
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  kw = dict(loss=audio_lm.LossConfig.from_config(config.loss))

  @nnx.jit
  def train_step(model, optimizer, rng):
    def loss(model):
      return continuous_lm.loss_fn(model, text, x, mask, rng, schedule=schedule, batch_mul=8,
                                   prediction="eps", **kw)
    (value, _), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    optimizer.update(model, grads)
    return value

  losses = [float(train_step(model, optimizer, jax.random.PRNGKey(i))) for i in range(400)]
  first, last = np.mean(losses[:10]), np.mean(losses[-20:])
  assert last < first / 5, (first, last)
