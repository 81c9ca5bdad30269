"""Tiny model configs and inputs shared by the model, sampler and training tests."""

import jax
import jax.numpy as jnp

from almtok.text.minilm import TextEmbedding
from configs import continuous_lm as lm_config

B, L, C = 2, 12, 8


def tiny_config(**loss):
  config = lm_config.get_config("tiny,seconds=0.48")  # 12 tokens at 25 Hz.
  config.unlock()
  config.model.token_dim = C
  config.model.text_len = 5
  config.loss.update(loss)
  config.lock()
  return config


def random_text(rng, b=B, n=5, e=384):
  tokens = jax.random.normal(rng, (b, n, e))
  lengths = jnp.array([n, 2] + [n] * (b - 2))[:b]
  mask = jnp.arange(n)[None, :] < lengths[:, None]
  pooled = jax.random.normal(jax.random.fold_in(rng, 1), (b, e))
  return TextEmbedding(tokens * mask[:, :, None], mask, pooled / jnp.linalg.norm(
      pooled, axis=-1, keepdims=True))


# The suite's tiny trained run (`tiny_lm` in conftest.py): `configs/synth_small.py` with this
# argument and these overrides (plus data.latents_dir). A batch (8) larger than the validation
# split (4 clips) and more sample captions (6) than it has: its last step evaluates and samples
# what there is.
TINY_LM_ARG = "size=tiny,steps=20,batch=8"
TINY_LM_OVERRIDES = {"data.seq_len": 25, "train.log_every": 10, "train.checkpoint_every": 20,
                     "train.eval_every": 20, "train.sample_every": 20, "sample.solver_steps": 2,
                     "train.sample_captions": 6}


def tiny_lm_config(latents_dir: str, **overrides):
  """The tiny run's config on `latents_dir`, with dotted-key `overrides` on top."""
  from configs import synth_small  # pylint: disable=g-import-not-at-top
  config = synth_small.get_config(TINY_LM_ARG)
  config.update_from_flattened_dict(dict(TINY_LM_OVERRIDES, **{"data.latents_dir": latents_dir}))
  config.update_from_flattened_dict(overrides)
  return config


def tiny_dlm_config(latents_dir: str, quantizer: str, **overrides):
  """The tiny discrete run (`tiny_dlm` in conftest.py): `configs/synth_small.py:arm=discrete` at the
  tiny run's sizes and schedule, on `quantizer`'s codes (2 codebooks of 16)."""
  from configs import synth_small  # pylint: disable=g-import-not-at-top
  config = synth_small.get_config(f"arm=discrete,{TINY_LM_ARG},n_q=2,k=16,quantizer={quantizer}")
  config.update_from_flattened_dict({k: v for k, v in TINY_LM_OVERRIDES.items()
                                     if k != "sample.solver_steps"})
  config.update_from_flattened_dict({"data.latents_dir": latents_dir, **overrides})
  return config


def band_energy_embedding(wavs, sample_rate):
  """A stand-in for a user's pretrained embedding (`almtok.evaluate --embedding`): the mean
  log-mel per band of each waveform, [N, 64]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from almtok import audio  # pylint: disable=g-import-not-at-top
  return np.stack([audio.log_mel(w, sample_rate).mean(axis=1) for w in wavs])
