"""The discrete baseline: sizes, codebook patterns, causality, cached decoding, sampling filters,
guidance, overfitting, decoding to latents, a trained run through `generate`, and one-line errors
for a codebook config that does not match the quantizer.

Shape letters: B batch, L frames, S steps, Q codebooks, K codes, C latent channels, D width.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile as sf
from flax import nnx

from almtok import configlib
from almtok import diffusion
from almtok import generate
from almtok import models
from almtok import objective
from almtok import sample
from almtok import train
from almtok.models import audio_lm
from almtok.models import discrete_lm
from almtok.models import mntp
from almtok.quantizers import rvq
from configs import continuous_lm as continuous_config
from configs import discrete_lm as discrete_config
from tests.tiny import random_text, tiny_dlm_config

B, L, Q, K = 2, 12, 3, 16


def _model(pattern="delay", seed=0):
  return discrete_lm.DiscreteLM(Q, K, L, 384, 5, dict(width=32, num_layers=2, num_heads=4),
                                pattern=pattern, rngs=nnx.Rngs(seed))


def _codes(seed=1, b=B):
  return jax.random.randint(jax.random.PRNGKey(seed), (b, L, Q), 0, K)


def _params(config):
  return sum(x.size for x in jax.tree.leaves(nnx.state(models.abstract(config), nnx.Param)))


def test_param_counts_match_audiogen_and_the_continuous_small():
  for preset, target in (("base", 285e6), ("large", 1e9)):
    assert abs(_params(discrete_config.get_config(preset)) / target - 1) < 0.03, preset
  small = _params(discrete_config.get_config("small"))
  assert abs(small / _params(continuous_config.get_config("small")) - 1) < 0.05


def test_delay_pattern_round_trip():
  codes = _codes()
  lengths = jnp.array([L, 7])
  mask = jnp.arange(L)[None] < lengths[:, None]
  steps, valid = discrete_lm.to_steps(codes, mask, "delay", K)
  assert steps.shape == (B, L + Q - 1, Q)
  for b in range(B):
    for s in range(L + Q - 1):
      for q in range(Q):
        frame = s - q
        inside = 0 <= frame < int(lengths[b])
        assert bool(valid[b, s, q]) == inside
        assert int(steps[b, s, q]) == (int(codes[b, frame, q]) if inside else K)
  back = discrete_lm.to_frames(steps, L, "delay")
  assert np.array_equal(np.asarray(back)[np.asarray(mask)], np.asarray(codes)[np.asarray(mask)])
  # The parallel pattern is the frames themselves.
  par, par_valid = discrete_lm.to_steps(codes, mask, "parallel", K)
  assert np.array_equal(np.asarray(discrete_lm.to_frames(par, L, "parallel"))[np.asarray(mask)],
                        np.asarray(codes)[np.asarray(mask)])
  assert np.array_equal(np.asarray(par_valid[..., 0]), np.asarray(mask))


@pytest.mark.parametrize("pattern", ["delay", "parallel"])
def test_causality_by_gradient(pattern):
  model = _model(pattern)
  steps, valid = discrete_lm.to_steps(_codes(), jnp.ones((B, L), bool), pattern, K)
  slots = mntp.ntp_slots(jnp.any(valid, axis=2))
  inputs, _ = mntp.inputs_and_targets(steps, slots, fill=K)
  text = random_text(jax.random.PRNGKey(2))
  h = model.embed_slots(inputs, slots.src_BxL, slots.offset_BxL)
  s = h.shape[1]

  def logits_at(delta, j):
    z = model.forward_slots(text, jnp.zeros(B, bool), h + delta, slots)
    return jnp.sum(jax.lax.dynamic_index_in_dim(model.logits(z), j, axis=1, keepdims=False))

  grad_at = jax.jit(lambda j: jax.grad(logits_at)(jnp.zeros_like(h), j))  # One compile.
  for j in (0, s // 2, s - 1):
    g = np.asarray(grad_at(j))
    assert np.all(g[:, j + 1:] == 0), j                      # Nothing later is seen...
    assert np.all(np.abs(g[:, :j + 1]).sum(axis=-1) > 0), j  # ...and everything before is.


@pytest.mark.parametrize("pattern", ["delay", "parallel"])
def test_kv_cache_decoding_equals_teacher_forced_logits(pattern):
  model = _model(pattern)
  text = random_text(jax.random.PRNGKey(3))
  use_null = jnp.array([False, True])
  steps, valid = discrete_lm.to_steps(_codes(4), jnp.ones((B, L), bool), pattern, K)
  slots = mntp.ntp_slots(jnp.any(valid, axis=2))
  # Each pass as one program (eager calls would compile every operation).
  forced, _ = nnx.jit(lambda model: model(text, use_null, steps, slots))(model)
  cache = nnx.jit(lambda model: model.prefill(text, use_null,
                                              model.init_cache(B, steps.shape[1])))(model)
  step = nnx.jit(lambda model, prev, j, cache: (lambda z, c: (model.logits(z), c))(
      *model.step(prev, j, cache)))
  prev = jnp.full((B, Q), K, jnp.int32)
  for j in range(steps.shape[1]):
    logits, cache = step(model, prev, jnp.int32(j), cache)
    np.testing.assert_allclose(logits, forced[:, j], atol=2e-4, rtol=2e-4)
    prev = steps[:, j]


def test_top_k_1_is_greedy_and_top_p_keeps_the_smallest_nucleus():
  logits = jax.random.normal(jax.random.PRNGKey(5), (4, Q, K)) * 3
  greedy = np.asarray(jnp.argmax(logits, axis=-1))
  for seed in range(5):
    for settings in (sample.CodeSamplerSettings(top_k=1), sample.CodeSamplerSettings(
        top_k=0, top_p=1e-6), sample.CodeSamplerSettings(top_k=1, temperature=5.0)):
      codes = sample.sample_codes(logits, jax.random.PRNGKey(seed), settings)
      assert np.array_equal(np.asarray(codes), greedy)
  probs = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda p: np.isfinite(np.asarray(sample.filter_logits(probs, top_p=p)))[0].tolist()
  assert kept(0.5) == [True, False, False, False]
  assert kept(0.6) == [True, True, False, False]
  assert kept(0.9) == [True, True, True, False]
  assert kept(1.0) == [True, True, True, True]
  top2 = np.isfinite(np.asarray(sample.filter_logits(probs, top_k=2)))[0].tolist()
  assert top2 == [True, True, False, False]


def test_cfg_scale_1_equals_the_conditional_logits():
  cond, uncond = jax.random.normal(jax.random.PRNGKey(6), (2, 4, Q, K))
  np.testing.assert_allclose(diffusion.guided(cond, uncond, jnp.float32(1.0)), cond,
                             atol=1e-6)
  model, text = _model(), random_text(jax.random.PRNGKey(7))
  guided = sample.CodeSampler(model, sample.CodeSamplerSettings(cfg=True, cfg_scale=1.0,
                                                                top_k=1))
  plain = sample.CodeSampler(model, sample.CodeSamplerSettings(cfg=False, top_k=1))
  a = guided.generate(text, L, jax.random.PRNGKey(0), chunk=5, progress=False)
  b = plain.generate(text, L, jax.random.PRNGKey(0), chunk=5, progress=False)
  assert np.array_equal(a, b)


def test_tiny_model_overfits_one_batch():
  model = _model("delay")
  codes, mask = _codes(8), jnp.ones((B, L), bool)
  text = random_text(jax.random.PRNGKey(9))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    def loss(p):
      return discrete_lm.loss_fn(nnx.merge(graphdef, p), text, codes, mask,
                                 jax.random.PRNGKey(0), loss=audio_lm.LossConfig(
                                     cfg_dropout=0.0, mntp_weight=0.0,
                                     drop_mixture=((1.0, 2.0, 2.0),)))
    (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, metrics

  first = None
  for _ in range(200):
    params, opt, metrics = step(params, opt)
    first = metrics if first is None else first
  assert float(first["ntp_loss"]) > 2.0           # About log(16) at the start...
  assert float(metrics["ntp_loss"]) < 0.05        # ...and memorised at the end.
  assert float(metrics["ntp_accuracy"]) == 1.0


def test_mntp_on_codes_drops_whole_frames():
  model = _model("parallel")
  codes, mask = _codes(10), jnp.arange(L)[None] < jnp.array([L, 9])[:, None]
  kw = dict(loss=audio_lm.LossConfig(cfg_dropout=0.0, mntp_weight=1.0,
                                     drop_mixture=((1.0, 4.0, 1.5),)))
  rng = jax.random.PRNGKey(11)
  loss, metrics = nnx.jit(lambda model: discrete_lm.loss_fn(model, random_text(rng), codes, mask,
                                                           rng, **kw))(model)
  assert np.isfinite(float(loss)) and "mntp_loss" in metrics
  counts = jax.jit(lambda: discrete_lm.target_counts(mask, rng, num_codebooks=Q,
                                                     pattern="parallel", **kw))()
  # Every valid slot predicts all Q codebooks of its target frame.
  assert float(counts["ntp"]) == Q * (L + 9)
  assert float(counts["mntp"]) % Q == 0 and 0 < float(counts["mntp"]) < float(counts["ntp"])


def test_generated_codes_decode_to_latents_and_continue_a_prompt():
  model, text = _model(), random_text(jax.random.PRNGKey(12))
  c = 8
  quantizer = rvq.RVQ(jax.random.normal(jax.random.PRNGKey(13), (Q, K, c)))
  settings = sample.CodeSamplerSettings(top_k=4)
  codes = sample.CodeSampler(model, settings).generate(text, L, jax.random.PRNGKey(1),
                                                       chunk=5, progress=False)
  assert codes.shape == (B, L, Q) and codes.min() >= 0 and codes.max() < K
  sampler = sample.make_sampler(model, settings, quantizer=quantizer)
  x = sampler.generate(text, L, jax.random.PRNGKey(1), chunk=5, progress=False)
  assert x.shape == (B, L, c) and np.all(np.isfinite(x))
  np.testing.assert_allclose(x, np.asarray(quantizer.decode(jnp.asarray(codes))), atol=1e-5)
  # A prompt's codes come back unchanged at the start.
  prompt = np.asarray(_codes(14)[:, :5])
  cont = sample.CodeSampler(model, settings).generate(text, L, jax.random.PRNGKey(2),
                                                      prompt_BxPxQ=prompt, chunk=5,
                                                      progress=False)
  assert np.array_equal(cont[:, :5], prompt)
  # Beyond the 12-frame context, windows slide 5 frames at a time over codes: the first is a
  # plain window, the next continues its newest 7 frames.
  rng, sampler = jax.random.PRNGKey(3), sample.CodeSampler(model, settings)
  long = sampler.generate(text, 2 * L, rng, chunk=5, progress=False, stride=5)
  assert long.shape == (B, 2 * L, Q)
  first = sampler.generate(text, L, jax.random.fold_in(rng, 0), chunk=5, progress=False)
  np.testing.assert_array_equal(long[:, :L], first)
  second = sampler.generate(text, L, jax.random.fold_in(rng, L), prompt_BxPxQ=long[:, L - 7:L],
                            chunk=5, progress=False)
  np.testing.assert_array_equal(long[:, L:L + 5], second[:, 7:])


def test_generate_writes_wav_and_png_from_a_discrete_run(tiny_dlm, tmp_path):
  used = generate.run(workdir=tiny_dlm, caption="a rising chirp", seconds=1.0,
                      out=str(tmp_path / "clip.wav"), sample_overrides={"top_k": 4}, seed=1)
  info = sf.info(tmp_path / "clip.wav")
  assert info.samplerate == 16_000 and abs(info.duration - 1.0) < 0.05
  assert os.path.getsize(tmp_path / "clip.png") > 5_000
  assert used["top_k"] == 4 and used["num_tokens"] == 25
  # A continuous-only setting is one line naming it.
  with pytest.raises(configlib.ConfigError,
                     match=r"^config.sample.solver_steps: the discrete_lm in .* "
                     r"has no such sampling setting \(it has cfg_scale, "):
    generate.run(workdir=tiny_dlm, caption="a beep", seconds=1.0, out=str(tmp_path / "x.wav"),
                 sample_overrides={"solver_steps": 5})


def test_a_codebook_config_unlike_the_quantizer_is_one_line(tiny_latents, tiny_rvq, tmp_path):
  for key, value, fitted in (("model.num_codebooks", 3, "n_q=2"),
                             ("model.codebook_size", 32, "k=16")):
    config = tiny_dlm_config(tiny_latents, tiny_rvq, **{key: value})
    with pytest.raises(configlib.ConfigError,
                       match=rf"^config\.{key}={value}: the quantizer in .* has {fitted}$"):
      train.check_run(config, str(tmp_path / "run"))
  config = tiny_dlm_config(tiny_latents, tiny_rvq, **{"loss.mntp_weight": 1.0})
  with pytest.raises(configlib.ConfigError, match="needs model.pattern='parallel'"):
    objective.check_config(config)
  config = tiny_dlm_config(tiny_latents, "")
  with pytest.raises(configlib.ConfigError, match="config.quantizer.path is empty"):
    train.check_run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_resuming_with_other_codebooks_is_refused(tiny_latents, tiny_rvq, tiny_dlm, tmp_path):
  workdir = tmp_path / "dlm"
  shutil.copytree(tiny_dlm, workdir)
  fitted, meta = rvq.RVQ.from_export(tiny_rvq), json.load(open(os.path.join(tiny_rvq,
                                                                             "rvq.json")))
  refit = rvq.RVQ(fitted.codebooks_QxKxC + 0.5)
  refit.export(tmp_path / "refit", source=meta["source"])
  config = tiny_dlm_config(tiny_latents, str(tmp_path / "refit"))
  with pytest.raises(configlib.ConfigError, match=r"its codebooks are not those the checkpoint"):
    train.check_run(config, str(workdir))
  train.check_run(tiny_dlm_config(tiny_latents, tiny_rvq), str(workdir))   # The same: fine.
