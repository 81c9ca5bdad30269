r"""Training throughput of the continuous LM on this machine: tokens/s, step time and MFU.

  .venv/bin/python experiments/benchmarks/train_throughput.py              # tiny, small, base
  .venv/bin/python experiments/benchmarks/train_throughput.py --sizes=small --profile=small
  .venv/bin/python experiments/benchmarks/train_throughput.py --sizes=small,base --profile= \
      --decoders=unrolled,scanned,scanned+dots,scanned+full \
      --out=experiments/benchmarks/train_decoders.json

Each size runs the trainer's own jitted step (`state.init_state` + `objective.make_train_step`, with
the same donation and out-shardings as `train.py`) on one device, on a synthetic batch of the CPU
demo's shapes (configs/synth_small.py at that size: mel tokens, L = 100 tokens = 4 s, MNTP on,
the demo's diffusion batch_mul). The first step compiles and is timed apart; the table reports
the median of the timed steps that follow.

MFU = model FLOP/s / peak, where model FLOPs per step are `flops.train_flops_per_step` (matmuls
and attention, forward + backward = 3x forward) and the peak is the dense float32 N x N matmul
FLOP/s that this process measures with `flops.measure_matmul_peak` just before each size is
timed (N = --matmul_n, 1024 by default; the median of 8 measurements, as the trainer estimates
it on a CPU; the table prints it). Step
times are medians, so that a short disturbance by another process does not move them much.

`--profile=SIZE` splits one step of that size into its parts, each jitted and timed alone: the
decoder (forward + backward of the NTP and MNTP sequences), the diffusion head (forward +
backward of its loss on the decoder's z) and the optimizer (AdamW update + EMA), with the MFU of
the two parts that have model FLOPs; then one decoder block's attention and MLP sublayers, and
the MLP once more with its GELU taken out.

Shape letters: B batch, L tokens, C token channels, D model width, N head rows (2 B L).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from almtok import diffusion
from almtok import flops
from almtok import objective
from almtok import optim
from almtok import sharding
from almtok import state as state_lib
from almtok.models import mntp
from almtok.text.minilm import TextEmbedding
from configs import synth_small

# (batch, timed steps) per size; base is the paper's 193M model, so a few steps of a small batch.
PLAN = {"tiny": (32, 20), "small": (32, 10), "base": (2, 2)}


# Decoder layouts to compare (--decoders): the unrolled stack, or a scanned one with a remat
# policy (which also runs the head's noise draws one at a time).
DECODERS = {"unrolled": dict(scan_layers=False, remat="none"),
            "scanned": dict(scan_layers=True, remat="none"),
            "scanned+dots": dict(scan_layers=True, remat="dots"),
            "scanned+full": dict(scan_layers=True, remat="full")}


def make_config(size: str, batch: int, decoder: str = "unrolled"):
  config = synth_small.get_config(f"size={size},batch={batch},steps=1000")
  config.model.decoder.update(DECODERS[decoder])
  return config


def synthetic_batch(config, seed: int = 0) -> dict:
  """A host batch of the trainer's shapes: latents, full masks, a random text embedding."""
  b, l = config.data.batch_size, config.data.seq_len
  n, e, c = config.model.text_len, config.model.text_dim, config.model.token_dim
  rng = np.random.default_rng(seed)
  text_mask_BxN = np.arange(n)[None, :] < rng.integers(4, n + 1, size=(b,))[:, None]
  return {"x_BxLxC": rng.standard_normal((b, l, c), dtype=np.float32),
          "mask_BxL": np.ones((b, l), bool),
          "text": TextEmbedding(rng.standard_normal((b, n, e), dtype=np.float32)
                                * text_mask_BxN[:, :, None], text_mask_BxN,
                                rng.standard_normal((b, e), dtype=np.float32))}


def time_calls(fn, args, steps: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of the next `steps` calls); `fn` returns its
  first argument's successor, which is fed back (so donated buffers stay valid)."""
  start = time.perf_counter()
  carry = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    carry = jax.block_until_ready(fn(carry[0], *args[1:]))
    seconds.append(time.perf_counter() - start)
  return first, float(np.median(seconds))


def peak_flops(n: int, trials: int = 8) -> float:
  """The trainer's estimate of a CPU's peak (`flops.measure_matmul_peak`: the median of `trials`
  timings of dense N x N matmuls after a warm-up), so that both report MFU against one figure."""
  return flops.measure_matmul_peak(n, repeats=10, trials=trials)


def time_alone(fn, args, steps: int) -> float:
  """Median seconds of `fn(*args)` on the same inputs, after one call that compiles it."""
  jax.block_until_ready(fn(*args))
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    seconds.append(time.perf_counter() - start)
  return float(np.median(seconds))


def flops_split(config, graphdef, params) -> tuple[float, float]:
  """(decoder, head) model FLOPs per step, from the trainer's formula."""
  total = flops.train_flops_per_step(config, graphdef, params)
  no_head = config.copy_and_resolve_references()
  no_head.unlock()
  no_head.diffusion.batch_mul = 0
  decoder = flops.train_flops_per_step(no_head, graphdef, params)
  return decoder, total - decoder


def benchmark_size(size: str, batch: int, num_steps: int, matmul_n: int,
                   decoder: str = "unrolled") -> dict:
  config = make_config(size, batch, decoder)
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  tx = optim.make_optimizer(config.train)
  with jax.set_mesh(mesh):
    graphdef, state, state_sh = state_lib.init_state(config, mesh, tx)
    step = jax.jit(objective.make_train_step(config, graphdef, tx, state_lib.make_schedule(config)),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
    batch_arrays = sharding.global_batch(synthetic_batch(config), mesh)
    rng = jax.random.PRNGKey(0)
    step_flops = flops.train_flops_per_step(config, graphdef, state["params"])
    params = sum(x.size for x in jax.tree.leaves(state["params"]))
    peak = peak_flops(matmul_n)
    compile_s, step_s = time_calls(step, (state, batch_arrays, rng), num_steps)
  tokens = config.data.batch_size * config.data.seq_len
  dec = config.model.decoder
  return dict(size=size, decoder=decoder, params=int(params),
              shape=f"{dec.width}x{dec.num_layers}",
              batch=config.data.batch_size,
              seq_len=config.data.seq_len, steps=num_steps, first_step_s=compile_s, step_s=step_s,
              tokens_per_s=tokens / step_s, model_flops_per_step=step_flops,
              peak_flops=peak, matmul_n=matmul_n, mfu=step_flops / step_s / peak)


def profile_size(size: str, batch: int, num_steps: int, matmul_n: int) -> dict:
  """Seconds (and MFU where there are model FLOPs) of the parts of one step, each jitted and
  timed alone: the decoder, the head, the optimizer; and, inside one decoder block, the
  attention and MLP sublayers and the MLP with its GELU taken out (all forward + backward)."""
  config = make_config(size, batch)
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  tx = optim.make_optimizer(config.train)
  schedule = state_lib.make_schedule(config)
  kw = objective.head_kwargs(config)
  drop_mixture = objective.make_objective(config, None, None).settings.drop_mixture
  b, l, d = config.data.batch_size, config.data.seq_len, config.model.decoder.width
  with jax.set_mesh(mesh):
    graphdef, state, _ = state_lib.init_state(config, mesh, tx)
    dec_flops, head_flops = flops_split(config, graphdef, state["params"])
    model = nnx.merge(graphdef, state["params"])
    s = model.prefix_len + l
    host = synthetic_batch(config)
    x_BxLxC, mask_BxL, text = (jnp.asarray(host["x_BxLxC"]), jnp.asarray(host["mask_BxL"]),
                               jax.tree.map(jnp.asarray, host["text"]))
    rng = jax.random.PRNGKey(0)

    # The decoder as loss_fn runs it: NTP and MNTP sequences stacked on the batch axis (X = 2B).
    def decoder_loss(params, probe_XxLxD, x_BxLxC, mask_BxL, text):
      model = nnx.merge(graphdef, params)
      ratio_B = mntp.sample_drop_ratio(rng, b, drop_mixture)
      slots = jax.tree.map(lambda a, c: jnp.concatenate([a, c], axis=0),
                           mntp.ntp_slots(mask_BxL), mntp.mntp_slots(rng, mask_BxL, ratio_B))
      twice = lambda a: jnp.concatenate([a, a], axis=0)
      z_XxLxD, _ = model(jax.tree.map(twice, text), jnp.zeros((2 * b,), bool), twice(x_BxLxC),
                         slots)
      return jnp.sum(z_XxLxD * probe_XxLxD)

    def head_loss(params, z_NxD, x0_NxC):
      model = nnx.merge(graphdef, params)
      return diffusion.diffusion_loss(model.head, schedule, x0_NxC, z_NxD, None, rng,
                                      batch_mul=kw["batch_mul"], prediction=kw["prediction"])

    # One decoder block's sublayers on the decoder's sequences (X x S slots, causal).
    block_graph, block_params = nnx.split(model.decoder.blocks[0], nnx.Param)
    positions_XxS = jnp.broadcast_to(jnp.arange(s), (2 * b, s))
    allowed_XxSxS = jnp.broadcast_to(jnp.tril(jnp.ones((s, s), bool)), (2 * b, s, s))

    def attention_loss(params, h_XxSxD):
      block = nnx.merge(block_graph, params)
      out, _ = block.attn(block.attn_norm(h_XxSxD), positions_XxS, allowed_XxSxS)
      return jnp.sum(out)

    def mlp_loss(params, h_XxSxD):
      block = nnx.merge(block_graph, params)
      return jnp.sum(block.mlp(block.mlp_norm(h_XxSxD)))

    def linear_mlp_loss(params, h_XxSxD):
      """The same MLP with its activation taken out: what its matmuls alone cost."""
      block = nnx.merge(block_graph, params)
      return jnp.sum(block.mlp.down(block.mlp.up(block.mlp_norm(h_XxSxD))))

    def optimizer_step(st, grads):
      updates, opt_state = tx.update(grads, st["opt_state"], st["params"])
      params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), st["params"], updates)
      return {"step": st["step"] + 1, "params": params, "opt_state": opt_state,
              "ema": optim.ema_update(st["ema"], params, config.train.ema_decay)}, grads

    both = (0, 1)
    probe = jax.random.normal(rng, (2 * b, l, d))
    z = jax.random.normal(rng, (2 * b * l, d))
    x0 = jax.random.normal(rng, (2 * b * l, config.model.token_dim))
    h = jax.random.normal(rng, (2 * b, s, d))
    peak = peak_flops(matmul_n)
    parts = {
        "decoder": time_alone(jax.jit(jax.grad(decoder_loss)),
                              (state["params"], probe, x_BxLxC, mask_BxL, text), num_steps),
        "head": time_alone(jax.jit(jax.grad(head_loss, both)), (state["params"], z, x0), num_steps),
    }
    block = {
        "attention": time_alone(jax.jit(jax.grad(attention_loss, both)), (block_params, h),
                                num_steps),
        "mlp": time_alone(jax.jit(jax.grad(mlp_loss, both)), (block_params, h), num_steps),
    }
    if config.model.decoder.mlp == "gelu":
      block["mlp without GELU"] = time_alone(jax.jit(jax.grad(linear_mlp_loss, both)),
                                             (block_params, h), num_steps)
    grads = jax.tree.map(jnp.ones_like, state["params"])
    _, parts["optimizer"] = time_calls(jax.jit(optimizer_step, donate_argnums=(0,)),
                                       (state, grads), num_steps)
  return dict(size=size, batch=b, seconds=parts, block_seconds=block,
              num_layers=config.model.decoder.num_layers, peak_flops=peak,
              mfu={"decoder": dec_flops / parts["decoder"] / peak,
                   "head": head_flops / parts["head"] / peak},
              flops={"decoder": dec_flops, "head": head_flops})


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,small,base")
  parser.add_argument("--decoders", default="unrolled", help=f"of {sorted(DECODERS)}")
  parser.add_argument("--profile", default="small", help="size to split into parts ('' : none)")
  parser.add_argument("--matmul_n", type=int, default=1024)
  parser.add_argument("--out", default="experiments/benchmarks/train_throughput.json")
  args = parser.parse_args()

  machine = (f"{platform.node()} {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}, "
             f"load average {os.getloadavg()[0]:.2f}")
  print(f"machine: {machine}")
  rows = []
  print(f"{'size':<6}{'decoder':>13}{'D x layers':>11}{'params':>9}{'batch':>6}{'L':>5}"
        f"{'compile s':>10}{'step s':>9}{'tokens/s':>10}{'GFLOP/step':>11}{'peak GFLOP/s':>13}"
        f"{'MFU':>7}")
  for size in args.sizes.split(","):
    for decoder in args.decoders.split(","):
      batch, num_steps = PLAN[size]
      r = benchmark_size(size, batch, num_steps, args.matmul_n, decoder)
      rows.append(r)
      print(f"{size:<6}{decoder:>13}{r['shape']:>11}{r['params'] / 1e6:>8.1f}M{r['batch']:>6}"
            f"{r['seq_len']:>5}{r['first_step_s']:>10.1f}{r['step_s']:>9.3f}"
            f"{r['tokens_per_s']:>10.0f}{r['model_flops_per_step'] / 1e9:>11.1f}"
            f"{r['peak_flops'] / 1e9:>13.1f}{100 * r['mfu']:>6.1f}%", flush=True)
  result = {"machine": machine, "rows": rows}
  if args.profile:
    batch, num_steps = PLAN[args.profile]
    p = profile_size(args.profile, batch, num_steps, args.matmul_n)
    result["profile"] = p
    total = sum(p["seconds"].values())
    print(f"\n{args.profile}, batch {p['batch']}, parts timed alone (peak "
          f"{p['peak_flops'] / 1e9:.1f} GFLOP/s):")
    for name, seconds in p["seconds"].items():
      mfu = f"MFU {100 * p['mfu'][name]:.1f}%" if name in p["mfu"] else "no model FLOPs"
      print(f"  {name:<18}{seconds:>8.3f} s  {100 * seconds / total:>4.0f}%  {mfu}")
    print(f"one decoder block of {p['num_layers']}, forward + backward:")
    for name, seconds in p["block_seconds"].items():
      print(f"  {name:<18}{seconds:>8.3f} s  x {p['num_layers']} layers = "
            f"{100 * seconds * p['num_layers'] / p['seconds']['decoder']:.0f}% of the decoder")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
