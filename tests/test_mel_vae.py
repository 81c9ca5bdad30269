"""The mel-VAE: geometry, KL math, the trainer end to end (tiny preset), resume, and the export.

The trainer runs once for 3 steps and once more to step 5 (a resume), in a module fixture;
the other tests read what those runs wrote. Shape letters: B batch, S samples, M mel bins,
F frames, T tokens, C token channels.
"""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from almtok import checkpoint
from almtok import events
from almtok import configlib
from almtok import optim
from almtok import tokenizers
from almtok.tokenizers import mel_vae
from almtok.tokenizers import melspec
from almtok.tokenizers import train_mel_vae as train
from almtok.tokenizers import vocoder
from configs import mel_vae as mel_vae_config

SR = 16_000


# ---------------------------------------------------------------------------------------------
# Geometry and loss math (no training).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "default", "gpu"])
def test_token_geometry_of_every_preset(preset):
  kwargs = train.model_kwargs(mel_vae_config.get_config(preset))
  abstract = nnx.eval_shape(lambda: mel_vae.MelVAE(**kwargs, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract)
  model = nnx.merge(graphdef, params)
  assert (model.downsample, model.latent_dim) == (4, 128)
  mel = jax.ShapeDtypeStruct((2, 64, 403), jnp.float32)   # 3 trailing frames are dropped.
  x = jax.eval_shape(lambda p, m: nnx.merge(graphdef, p).encode(m), params, mel)
  assert x.shape == (2, 100, 128) and x.dtype == jnp.float32
  mel_hat = jax.eval_shape(lambda p, z: nnx.merge(graphdef, p).decode(z), params, x)
  assert mel_hat.shape == (2, 64, 400)


def test_kl_divergence_closed_form():
  mean = jnp.array([0.0, 1.0, 0.0, -2.0])
  logvar = jnp.array([0.0, 0.0, np.log(2.0), np.log(0.5)])
  want = [0.0, 0.5, 0.5 * (1.0 - np.log(2.0)), 0.5 * (4.0 + 0.5 - 1.0 - np.log(0.5))]
  np.testing.assert_allclose(mel_vae.kl_divergence(mean, logvar), want, rtol=1e-6, atol=1e-7)
  # Against a Monte-Carlo estimate of E_q[log q(z) - log p(z)] for one case.
  z = 1.5 + np.sqrt(0.3) * np.random.default_rng(0).standard_normal(400_000)
  log_q = -0.5 * (z - 1.5) ** 2 / 0.3 - 0.5 * np.log(2 * np.pi * 0.3)
  log_p = -0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(mel_vae.kl_divergence(jnp.array(1.5), jnp.log(jnp.array(0.3))),
                             np.mean(log_q - log_p), atol=5e-3)


def test_config_checks_name_the_key():
  config = mel_vae_config.get_config("tiny")
  train.check_config(config)
  with config.unlocked():
    config.train.crop_frames = 30
  with pytest.raises(configlib.ConfigError, match="config.train.crop_frames=30"):
    train.check_config(config)


def test_sampler_is_a_function_of_the_step_and_mixes_sources():
  clips = {"synth": [np.zeros((64, 300), np.float32)],
           "debian": [np.ones((64, 10), np.float32), np.ones((64, 500), np.float32)]}
  kw = dict(seed=0, batch_size=64, crop_frames=32, debian_prob=0.25)
  a_BxMxF = train.sample_batch(clips, 7, **kw)
  np.testing.assert_array_equal(a_BxMxF, train.sample_batch(clips, 7, **kw))
  assert not np.array_equal(a_BxMxF, train.sample_batch(clips, 8, **kw))
  assert a_BxMxF.shape == (64, 64, 32)
  is_debian_B = a_BxMxF.max(axis=(1, 2)) == 1.0
  assert 4 <= is_debian_B.sum() <= 32
  # The 10-frame clip is padded with the floor.
  short = [b for b in a_BxMxF if b[0, 0] == 1.0 and b[0, -1] == melspec.FLOOR_DB]
  assert all(np.all(b[:, 10:] == melspec.FLOOR_DB) for b in short)
  assert not train.sample_batch({"synth": clips["synth"]}, 7, **kw).any()


def test_checkpointer_keeps_the_last_n_and_round_trips(tmp_path):
  state = {"w": jnp.arange(6.0).reshape(2, 3), "n": {"step": jnp.int32(4)}}
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, async_save=False) as ckpt:
    assert ckpt.latest_step() is None
    for step in (1, 2, 3):
      assert ckpt.save(step, jax.tree.map(lambda v, s=step: v + s, state), {"step": step})
    assert not ckpt.save(3, state)
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    restored, meta, _ = ckpt.restore(2, jax.eval_shape(lambda: state))
  assert meta == {"step": 2}
  np.testing.assert_array_equal(restored["w"], state["w"] + 2)
  assert int(restored["n"]["step"]) == 6


# ---------------------------------------------------------------------------------------------
# The trainer, end to end.
# ---------------------------------------------------------------------------------------------


def _event_values(workdir: str, tag: str) -> list[tuple[int, np.ndarray]]:
  """(step, value) of every TensorBoard summary called `tag` in `workdir`'s event files."""
  return events.read_events(workdir).values.get(tag, [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("mel_vae"))
  config = mel_vae_config.get_config("tiny")
  first = train.train_and_export(config, workdir)
  with open(os.path.join(workdir, "mel_vae.json")) as f:
    first_export = json.load(f)
  with config.unlocked():
    config.train.num_steps = 5
  second = train.train_and_export(config, workdir)
  return dict(workdir=workdir, config=config, first=first, second=second,
              first_export=first_export)


def test_first_run_writes_checkpoints_events_and_export(trained):
  workdir, first = trained["workdir"], trained["first"]
  assert first["step"] == 3
  assert trained["first_export"]["trained_steps"] == 3
  assert np.isfinite(first["eval/synth_mel_snr_db"])
  assert os.path.isfile(os.path.join(workdir, "mel_vae.safetensors"))
  assert not glob.glob(os.path.join(workdir, "**", "*.pkl"), recursive=True)
  assert _event_values(workdir, "recon/synth")   # Reconstruction images.
  assert _event_values(workdir, "eval/synth_mel_snr_db")


def test_resume_continues_the_step_count(trained):
  workdir, first, second = trained["workdir"], trained["first"], trained["second"]
  assert second["step"] == 5
  assert second["train_seconds"] > first["train_seconds"]
  # Every step was trained (and logged) exactly once across the two runs.
  steps = sorted(step for step, _ in _event_values(workdir, "train/loss"))
  assert steps == [1, 2, 3, 4, 5]
  losses = [float(v) for _, v in _event_values(workdir, "train/loss")]
  assert all(np.isfinite(losses))
  with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [4, 5]


@pytest.fixture(scope="module")
def exported(trained):
  return tokenizers.get("mel_vae", path=trained["workdir"],
                        vocoder=vocoder.GriffinLim(n_iter=4))


def test_a_non_finite_step_stops_the_run_and_keeps_the_last_checkpoint(trained, tmp_path):
  workdir = str(tmp_path / "mel_vae")
  shutil.copytree(trained["workdir"], workdir)
  config = mel_vae_config.get_config("tiny")
  with config.unlocked():
    config.train.update(num_steps=9, kl_weight=float("nan"))   # Every loss is NaN from now on.
  with pytest.raises(optim.NonFiniteError, match=r"^step 6: loss is nan \(not finite\)"):
    train.train_and_export(config, workdir)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 5   # Step 6 was due a checkpoint; nothing after 5 was saved.
  ckpt.close()


def test_export_equals_the_last_checkpoint(trained, exported):
  workdir, config = trained["workdir"], trained["config"]
  tx = train.make_optimizer(config.train)
  _, state = train.init_state(config, tx, abstract=True)
  with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    restored, meta, _ = ckpt.restore(5, state)
  assert meta["step"] == 5 and meta["config"]["train"]["num_steps"] == 5
  got = checkpoint.flat_params(exported.model)
  want = checkpoint.flat_params(nnx.merge(nnx.graphdef(exported.model), restored["params"]))
  assert got.keys() == want.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_exported_tokenizer_encodes_and_decodes(exported):
  assert (exported.sample_rate, exported.frame_rate, exported.latent_dim) == (SR, 25.0, 128)
  t = np.arange(SR) / SR
  wav_BxS = (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
  x_BxTxC = exported.encode(wav_BxS)
  assert x_BxTxC.shape == (1, 25, 128)
  np.testing.assert_allclose(jax.jit(exported.encode)(wav_BxS), x_BxTxC, atol=1e-4, rtol=1e-4)
  mel_BxMxF = jax.jit(exported.decode_mel)(x_BxTxC)
  assert mel_BxMxF.shape == (1, 64, 100)
  assert float(jnp.min(mel_BxMxF)) >= melspec.FLOOR_DB
  out_BxS = exported.decode(x_BxTxC)
  assert out_BxS.shape == wav_BxS.shape and np.all(np.isfinite(out_BxS))


def test_encoding_is_local_in_time(exported):
  """Per-frame normalization: tokens far from a cut do not depend on what lies past it."""
  mel_BxMxF = jnp.asarray(np.random.default_rng(0).uniform(-100, 0, (1, 64, 160)), jnp.float32)
  whole_BxTxC = exported.encode_mel(mel_BxMxF)
  first_half_BxTxC = exported.encode_mel(mel_BxMxF[:, :, :80])
  np.testing.assert_allclose(first_half_BxTxC[:, :12], whole_BxTxC[:, :12], atol=1e-4)
  assert not np.allclose(first_half_BxTxC[:, -1], whole_BxTxC[:, 19], atol=1e-4)


def test_load_rejects_mismatched_weights(trained, tmp_path):
  with open(os.path.join(trained["workdir"], "mel_vae.json")) as f:
    description = json.load(f)
  description["model"]["channels"] = [8, 12, 12]   # Same parameter names, other shapes.
  with open(tmp_path / "mel_vae.json", "w") as f:
    json.dump(description, f)
  os.symlink(os.path.join(trained["workdir"], "mel_vae.safetensors"),
             tmp_path / "mel_vae.safetensors")
  with pytest.raises(ValueError, match="has shape"):
    mel_vae.load_model(str(tmp_path))


def test_loss_is_l1_plus_weighted_kl(exported):
  tiny_model = exported.model
  mel_BxMxF = jnp.asarray(np.random.default_rng(0).uniform(-100, 0, (2, 64, 32)), jnp.float32)

  @jax.jit
  def losses(rng):
    return (mel_vae.loss_fn(tiny_model, mel_BxMxF, rng, 0.0),
            mel_vae.loss_fn(tiny_model, mel_BxMxF, rng, 0.5))

  (loss0, m0), (loss1, m1) = losses(jax.random.key(0))
  np.testing.assert_allclose(loss0, m0["recon_l1_db"] / 30.0, rtol=1e-5)
  num_latent, num_mel = 2 * 8 * 128, mel_BxMxF.size
  np.testing.assert_allclose(loss1 - loss0, 0.5 * m1["kl"] * num_latent / num_mel, rtol=1e-4)
  np.testing.assert_allclose(m1["kl_per_token"], 128 * m1["kl"], rtol=1e-5)


def test_prepare_with_the_exported_mel_vae_reads_back(trained, tmp_path):
  from almtok import prepare  # pylint: disable=g-import-not-at-top
  from almtok.latents import pipeline  # pylint: disable=g-import-not-at-top
  from configs import prepare as prepare_config  # pylint: disable=g-import-not-at-top
  config = prepare_config.get_config(
      f"synth_sounds,size=tiny,seconds=1.0,tokenizer=mel_vae,tokenizer_path={trained['workdir']}")
  stats = prepare.prepare(config, str(tmp_path)).stats
  assert stats.latent_dim == 128 and stats.frame_rate == 25.0
  batch = next(iter(pipeline.make_dataset(str(tmp_path / "latents"), "train", seq_len=25,
                                          batch_size=4)))
  assert batch["x_BxLxC"].shape == (4, 25, 128) and batch["mask_BxL"].all()
  assert np.all(np.isfinite(batch["x_BxLxC"]))


def test_a_run_keeps_its_own_copy_of_the_weights(trained, exported, tmp_path):
  """What a training workdir stores so that generation does not need the tokenizer's workdir:
  the export alone (not the trainer's checkpoints), which loads as the same tokenizer."""
  params = tokenizers.copy_weights("mel_vae", {"path": trained["workdir"]}, str(tmp_path / "tok"))
  assert params == {"path": str(tmp_path / "tok")}
  assert sorted(os.listdir(tmp_path / "tok"))[0].startswith("mel_vae")
  assert not (tmp_path / "tok" / "checkpoints").exists()
  copy = tokenizers.get("mel_vae", **params)
  want, got = checkpoint.flat_params(exported.model), checkpoint.flat_params(copy.model)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert tokenizers.copy_weights("mel", {"group": 4}, str(tmp_path / "none")) == {"group": 4}
  assert not (tmp_path / "none").exists()
