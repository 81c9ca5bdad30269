r"""The discrete baseline against the continuous LM: sampling speed, training throughput and MFU.

  python experiments/benchmarks/discrete_vs_continuous.py     # writes discrete_vs_continuous.json

Both models on the paper's token geometry (mel-VAE latents: 128 channels at 25 Hz), at matched
parameters (`small`: continuous 1.96M, discrete 1.97M) and at the published sizes (continuous
`base` 193M against discrete `base` 285M, AudioGen Base). The discrete model reads RVQ codes of
the same latents (4 codebooks of 1024, delay pattern); its codebooks here are random, as are all
weights: speed does not depend on them.

Sampling: tokens (frames) per second generating 10 s (250 frames) for batch 1 and 16, with and
without classifier-free guidance, after a warm-up run that compiles the sampler. The continuous
LM runs its head's K = 100 reverse steps per token (the paper's setting); the discrete one needs
250 + 3 pattern steps for 250 frames, which its frames/s includes. Sizes whose full run would
take too long on a CPU are timed over the first `--base_frames` frames and scaled (the table says
so); per-token cost does not grow much with position at these lengths.

Training: one jitted train step of `almtok.train` (the same step function for both models) on a
synthetic batch of 4 s clips (100 tokens), median of the timed steps after a compiling one; MFU
against the float32 matmul peak measured in the same process (`flops.measure_matmul_peak`). The
continuous LM trains with MNTP (as the paper) and without; the discrete one without (as
AudioGen). The discrete step includes quantizing the latents (RVQ, on the device).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import numpy as np
from flax import nnx

from almtok import flops
from almtok import models
from almtok import objective
from almtok import optim
from almtok import sample
from almtok import sharding
from almtok import state as state_lib
from almtok.quantizers import rvq
from almtok.text.minilm import TextEmbedding
from configs import continuous_lm
from configs import discrete_lm
from configs import synth_small

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput  # noqa: E402  pylint: disable=g-import-not-at-top
from sampling import text_for, time_generate  # noqa: E402  pylint: disable=g-import-not-at-top

C, N_Q, K = 128, 4, 1024
FRAMES = 250   # 10 s at 25 Hz.


def random_quantizer() -> rvq.RVQ:
  return rvq.RVQ(jax.random.normal(jax.random.PRNGKey(0), (N_Q, K, C)))


def sampling_config(kind: str, size: str):
  if kind == "continuous":
    return continuous_lm.get_config(f"{size},tokenizer=mel_vae,seconds=10.0")
  return discrete_lm.get_config(f"{size},tokenizer=mel_vae,seconds=10.0,n_q={N_Q},k={K}")


def time_sampling(kind: str, size: str, batch: int, cfg: bool, frames: int) -> float:
  """Seconds to sample `frames` frames for `batch` captions (compiled beforehand)."""
  config = sampling_config(kind, size)
  model = models.build(config, nnx.Rngs(0))
  if kind == "continuous":
    settings = sample.SamplerSettings(solver_steps=100, cfg=cfg, cfg_scale=3.0 if cfg else 1.0,
                                      prediction="eps", data_range=False)
    sampler = sample.make_sampler(model, settings,
                                  schedule=state_lib.make_schedule(config))
  else:
    settings = sample.CodeSamplerSettings(cfg=cfg, cfg_scale=3.0 if cfg else 1.0)
    sampler = sample.make_sampler(model, settings, quantizer=random_quantizer())
  return time_generate(sampler, text_for(config, batch), frames)


def training_config(kind: str, size: str, batch: int, mntp: bool):
  common = f"size={size},tokenizer=mel_vae,batch={batch},steps=1000,mntp={mntp}"
  if kind == "continuous":
    return synth_small.get_config(common)
  return synth_small.get_config(f"arm=discrete,{common},n_q={N_Q},k={K}")


def time_training(kind: str, size: str, batch: int, num_steps: int, mntp: bool,
                  matmul_n: int) -> dict:
  config = training_config(kind, size, batch, mntp)
  quantizer = random_quantizer() if kind == "discrete" else None
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  tx = optim.make_optimizer(config.train)
  b, l = config.data.batch_size, config.data.seq_len
  n, e = config.model.text_len, config.model.text_dim
  rng = np.random.default_rng(0)
  host = {"x_BxLxC": rng.standard_normal((b, l, C), dtype=np.float32),
          "mask_BxL": np.ones((b, l), bool),
          "text": TextEmbedding(rng.standard_normal((b, n, e), dtype=np.float32),
                                np.ones((b, n), bool), rng.standard_normal((b, e),
                                                                           dtype=np.float32))}
  with jax.set_mesh(mesh):
    graphdef, state, state_sh = state_lib.init_state(config, mesh, tx)
    step = jax.jit(objective.make_train_step(config, graphdef, tx, state_lib.make_schedule(config),
                                             quantizer),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
    batch_arrays = sharding.global_batch(host, mesh)
    step_flops = flops.train_flops_per_step(config, graphdef, state["params"])
    params = sum(x.size for x in jax.tree.leaves(state["params"]))
    peak = train_throughput.peak_flops(matmul_n)
    compile_s, step_s = train_throughput.time_calls(step, (state, batch_arrays,
                                                           jax.random.PRNGKey(0)), num_steps)
  return dict(kind=kind, size=size, mntp=mntp, params=int(params), batch=b, seq_len=l,
              steps=num_steps, first_step_s=compile_s, step_s=step_s, tokens_per_s=b * l / step_s,
              model_flops_per_step=step_flops, peak_flops=peak, mfu=step_flops / step_s / peak)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="small,base")
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--base_frames", type=int, default=25,
                      help="frames actually timed for base sampling (scaled to 250)")
  parser.add_argument("--train", default="small:32:5,base:2:2",
                      help="size:batch:timed steps of the training comparison")
  parser.add_argument("--matmul_n", type=int, default=1024)
  parser.add_argument("--out", default="experiments/benchmarks/discrete_vs_continuous.json")
  args = parser.parse_args()

  machine = (f"{platform.node()} {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}")
  print(f"machine: {machine}")
  results = {"machine": machine, "sampling": [], "training": []}

  print("\nSampling 10 s (250 frames at 25 Hz); continuous: K = 100 head steps per token")
  print("| size | batch | CFG | timed frames | continuous frames/s | discrete frames/s | "
        "discrete / continuous |")
  print("|---|---:|---|---:|---:|---:|---:|")
  for size in filter(None, args.sizes.split(",")):
    frames = FRAMES if size in ("tiny", "small") else args.base_frames
    for batch in (int(b) for b in args.batches.split(",")):
      for cfg in (False, True):
        row = dict(size=size, batch=batch, cfg=cfg, timed_frames=frames)
        for kind in ("continuous", "discrete"):
          seconds = time_sampling(kind, size, batch, cfg, frames)
          row[f"{kind}_s"] = seconds
          row[f"{kind}_frames_per_s"] = batch * frames / seconds
        row["speedup"] = row["discrete_frames_per_s"] / row["continuous_frames_per_s"]
        results["sampling"].append(row)
        print(f"| {size} | {batch} | {'on' if cfg else 'off'} | {frames} | "
              f"{row['continuous_frames_per_s']:.1f} | {row['discrete_frames_per_s']:.1f} | "
              f"{row['speedup']:.1f}x |", flush=True)

  print("\nTraining: one step on 4 s clips (100 tokens)")
  print("| model | size | params | batch | step s | tokens/s | GFLOP/step | peak GFLOP/s | MFU |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for spec in args.train.split(","):
    size, batch, num_steps = spec.split(":")
    for kind, mntp in (("continuous", True), ("continuous", False), ("discrete", False)):
      row = time_training(kind, size, int(batch), int(num_steps), mntp, args.matmul_n)
      results["training"].append(row)
      name = f"{kind}{' + MNTP' if mntp else ''}"
      print(f"| {name} | {size} | {row['params'] / 1e6:.2f}M | {row['batch']} | "
            f"{row['step_s']:.3f} | {row['tokens_per_s']:.0f} | "
            f"{row['model_flops_per_step'] / 1e9:.1f} | {row['peak_flops'] / 1e9:.1f} | "
            f"{100 * row['mfu']:.1f}% |", flush=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
