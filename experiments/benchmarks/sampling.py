r"""Sampling speed: tokens/s and real-time factor of the KV-cache sampler, against a naive one.

  python experiments/benchmarks/sampling.py                      # the full table
  python experiments/benchmarks/sampling.py --sizes=tiny,small --tokens=250

For each model size, batch, K (head steps per token) and guidance setting it times the jitted
sampler (`almtok.sample.Sampler`) generating 10 s of audio (250 tokens at 25 Hz) after one
warm-up run that compiles it. Real-time factor = seconds of compute per second of audio (below 1
is faster than real time). Sizes whose full run would take too long on a CPU are timed over the
first `--base_tokens` tokens and scaled to 10 s (the table says so).

In the same run it times a naive sampler on `small`: a Python loop over tokens that runs the
full decoder forward over the whole sequence so far (no cache) and calls the head one reverse
step at a time, and prints the speed-up. Finally it splits one token's time for `base` into the
decoder step and the K head steps. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
from flax import nnx

from almtok import diffusion
from almtok import models
from almtok import sample
from almtok.models import mntp
from almtok.text.minilm import TextEmbedding
from configs import continuous_lm

FRAME_RATE = 25.0


def build(size: str):
  config = continuous_lm.get_config(f"{size},tokenizer=mel_vae,seconds=10.0")
  return config, models.build(config, nnx.Rngs(0))


def text_for(config, batch: int) -> TextEmbedding:
  n = config.model.text_len
  rng = jax.random.PRNGKey(0)
  return TextEmbedding(jax.random.normal(rng, (batch, n, 384)), jnp.ones((batch, n), bool),
                       jax.random.normal(rng, (batch, 384)))


def time_sampler(model, config, batch: int, k: int, cfg: bool, tokens: int) -> float:
  """Seconds to sample `tokens` tokens for `batch` captions (compiled beforehand)."""
  settings = sample.SamplerSettings(solver_steps=k, cfg=cfg, cfg_scale=3.0 if cfg else 1.0,
                                    prediction=config.diffusion.prediction)
  sampler = sample.Sampler(model, diffusion.cosine_schedule(config.diffusion.timesteps),
                           settings)
  return time_generate(sampler, text_for(config, batch), tokens)


def time_generate(sampler, text, tokens: int) -> float:
  """Seconds of `sampler.generate` for `tokens` tokens, after a first call that compiles it."""
  chunk = min(25, tokens)
  sampler.generate(text, tokens, jax.random.PRNGKey(0), chunk=chunk, progress=False)  # Compile.
  start = time.perf_counter()
  sampler.generate(text, tokens, jax.random.PRNGKey(1), chunk=chunk, progress=False)
  return time.perf_counter() - start


def time_naive(model, config, tokens: int, k: int) -> float:
  """Seconds per token of a cache-free, step-by-step sampler (batch 1, no guidance)."""
  length = config.model.max_len
  schedule = diffusion.respace(diffusion.cosine_schedule(config.diffusion.timesteps), k)
  text = text_for(config, 1)
  c = model.token_dim

  @nnx.jit
  def forward(model, x_1xLxC, mask_1xL):
    z, _ = model(text, jnp.zeros((1,), bool), x_1xLxC, mntp.ntp_slots(mask_1xL))
    return z

  @nnx.jit
  def head_step(model, x_t, k_index, z, rng):
    out = model.head(x_t, schedule.timesteps[k_index][None], z)
    x0, _ = diffusion.x0_eps_from_output(schedule, x_t, k_index[None], out, "eps", 5.0)
    mean, _, log_var = diffusion.posterior_mean_variance(schedule, x0, x_t, k_index[None])
    noise = jax.random.normal(rng, x_t.shape)
    return mean + jnp.exp(0.5 * log_var) * noise * (k_index > 0)

  x = jnp.zeros((1, length, c))

  def one_token(x, i):
    mask = (jnp.arange(length) <= i)[None]
    z = forward(model, x, mask)[:, i]
    x_t = jax.random.normal(jax.random.PRNGKey(i), (1, c))
    for step in range(k - 1, -1, -1):
      x_t = head_step(model, x_t, jnp.int32(step), z, jax.random.PRNGKey(step))
    return x.at[:, i].set(x_t)

  x = one_token(x, 0)  # Compile.
  jax.block_until_ready(x)
  start = time.perf_counter()
  for i in range(1, tokens + 1):
    x = one_token(x, i)
  jax.block_until_ready(x)
  return (time.perf_counter() - start) / tokens


def split_token_time(model, config, k: int, repeats: int = 5) -> tuple[float, float]:
  """(decoder step, K head steps) seconds for one token at batch 1 with guidance."""
  settings = sample.SamplerSettings(solver_steps=k, cfg=True,
                                    prediction=config.diffusion.prediction)
  schedule = diffusion.respace(diffusion.cosine_schedule(config.diffusion.timesteps), k)
  cache = model.init_cache(2, config.model.max_len)
  prev = jnp.zeros((2, model.token_dim))

  @nnx.jit
  def decode(model, prev, cache):
    return model.step(prev, jnp.int32(config.model.max_len // 2), cache)

  @nnx.jit
  def head(model, z):
    return sample._sample_token(model, z, schedule, settings, jnp.float32(0.5),  # pylint: disable=protected-access
                                jax.random.PRNGKey(0))

  z, _ = decode(model, prev, cache)
  jax.block_until_ready(head(model, z))
  start = time.perf_counter()
  for _ in range(repeats):
    z, _ = decode(model, prev, cache)
    jax.block_until_ready(z)
  t_dec = (time.perf_counter() - start) / repeats
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(head(model, z))
  return t_dec, (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,small,base")
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--ks", default="100,25")
  parser.add_argument("--tokens", type=int, default=250, help="10 s at 25 Hz")
  parser.add_argument("--base_tokens", type=int, default=25,
                      help="tokens actually timed for base (scaled to --tokens)")
  parser.add_argument("--naive_tokens", type=int, default=10)
  parser.add_argument("--out", default="experiments/benchmarks/sampling.json")
  args = parser.parse_args()

  print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}")
  rows = []
  header = (f"{'size':<6}{'batch':>6}{'K':>5}{'CFG':>5}{'timed':>7}{'tokens/s':>11}"
            f"{'RTF':>9}")
  print(header)
  models_by_size = {}
  for size in args.sizes.split(","):
    config, model = build(size)
    models_by_size[size] = (config, model)
    timed = args.base_tokens if size == "base" else args.tokens
    for batch in (int(b) for b in args.batches.split(",")):
      for k in (int(v) for v in args.ks.split(",")):
        for cfg in (False, True):
          seconds = time_sampler(model, config, batch, k, cfg, timed)
          per_token = seconds / timed
          tokens_per_s = batch / per_token
          rtf = per_token * FRAME_RATE / batch
          rows.append(dict(size=size, batch=batch, k=k, cfg=cfg, timed_tokens=timed,
                           tokens_per_s=tokens_per_s, rtf=rtf))
          print(f"{size:<6}{batch:>6}{k:>5}{'on' if cfg else 'off':>5}{timed:>7}"
                f"{tokens_per_s:>11.1f}{rtf:>9.3f}", flush=True)

  result = {"rows": rows}
  if "small" in models_by_size:
    config, model = models_by_size["small"]
    k = max(int(v) for v in args.ks.split(","))
    naive = time_naive(model, config, args.naive_tokens, k)
    fast = next(r for r in rows if r["size"] == "small" and r["batch"] == 1 and r["k"] == k
                and not r["cfg"])
    fast_per_token = 1 / fast["tokens_per_s"]
    result["naive"] = dict(per_token_s=naive, fast_per_token_s=fast_per_token,
                           speedup=naive / fast_per_token)
    print(f"naive sampler, small, batch 1, K={k}, no CFG: {naive * 1e3:.1f} ms/token vs "
          f"{fast_per_token * 1e3:.2f} ms/token: {naive / fast_per_token:.0f}x faster")
  if "base" in models_by_size:
    config, model = models_by_size["base"]
    t_dec, t_head = split_token_time(model, config, 100)
    result["base_split"] = dict(decoder_s=t_dec, head_s=t_head)
    print(f"base, one token, batch 1 with CFG (2 rows), K=100: decoder step {t_dec * 1e3:.1f} ms,"
          f" head {t_head * 1e3:.1f} ms ({100 * t_head / (t_dec + t_head):.0f}% in the head)")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
