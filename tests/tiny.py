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
