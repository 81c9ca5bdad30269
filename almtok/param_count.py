r"""Parameter counts and analytic FLOPs per generated token.

  python -m almtok.param_count --config=configs/continuous_lm.py:base
  python -m almtok.param_count --config=configs/discrete_lm.py:base

Counts come from `jax.eval_shape` (nothing is allocated) and exclude the frozen MiniLM text
encoder. FLOPs count multiply-adds as 2 and cover matmuls and attention; one generated token
costs one decoder step (at the average context of a full-length clip) plus K head evaluations,
and classifier-free guidance doubles both (conditional and unconditional rows in one batch).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags
import jax
from flax import nnx

from almtok import configlib
from almtok import flops as flops_lib
from almtok import models


def _size(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def count(config) -> dict:
  """Parameter counts and FLOPs per generated token for a model config."""
  model = models.abstract(config)
  total = _size(nnx.state(model, nnx.Param))
  decoder = _size(nnx.state(model.decoder, nnx.Param))
  head = _size(nnx.state(model.head, nnx.Param))
  flops, per_token = {}, None
  head_steps = ([1] if config.model_name == "discrete_lm"
                else sorted({config.sample.solver_steps, 25}, reverse=True))
  for k in head_steps:
    for cfg in (False, True):
      per_token = flops_lib.generation_flops(model, config, k, cfg)
      flops[(k, cfg)] = per_token["total"]
  return dict(total=total, decoder=decoder, head=head, other=total - decoder - head,
              decoder_step_flops=per_token["decoder_step"],
              head_eval_flops=per_token["head_eval"], flops=flops,
              avg_context=per_token["context"])


def report(config, counts: dict) -> str:
  t = counts["total"]
  m, dec = config.model, config.model.decoder
  discrete = config.model_name == "discrete_lm"
  if discrete:
    shape = (f"{m.num_codebooks} codebooks x {m.codebook_size} codes, {m.pattern} pattern, "
             f"{m.max_len} frames")
    parts = (("decoder", "causal decoder"), ("head", "softmax heads"),
             ("other", "prefix/code embeddings"))
  else:
    shape = (f"head {m.head.depth} x {m.head.width}, {m.max_len} tokens of {m.token_dim} "
             f"channels")
    parts = (("decoder", "causal decoder"), ("head", "diffusion head"),
             ("other", "prefix/input projections"))
  lines = [
      f"model {config.model_name}: decoder {dec.num_layers} x {dec.width}, {shape}",
      "parameters (from jax.eval_shape; the frozen MiniLM text encoder is not counted):",
      f"  {'total':<28}{t / 1e6:>9.2f}M" + (
          f"  (published: {config.paper_params / 1e6:.0f}M, "
          f"{100 * (t / config.paper_params - 1):+.1f}%)" if config.paper_params else ""),
  ]
  for name, desc in parts:
    lines.append(f"  {desc:<28}{counts[name] / 1e6:>9.2f}M  {100 * counts[name] / t:5.1f}%")
  if discrete:
    lines.append(f"FLOPs per generated step (decoder step at average context "
                 f"{counts['avg_context']:.0f} slots + the softmax heads):")
    lines.append(f"  decoder step {counts['decoder_step_flops'] / 1e9:.3f} GFLOP, heads "
                 f"{counts['head_eval_flops'] / 1e9:.4f} GFLOP")
    for (_, cfg), f in counts["flops"].items():
      lines.append(f"  {'with CFG   ' if cfg else 'without CFG'} {f / 1e9:9.3f} GFLOP")
    return "\n".join(lines)
  lines.append(f"FLOPs per generated token (decoder step at average context "
               f"{counts['avg_context']:.0f} slots + K head steps):")
  lines.append(f"  decoder step {counts['decoder_step_flops'] / 1e9:.3f} GFLOP, "
               f"one head step {counts['head_eval_flops'] / 1e9:.4f} GFLOP")
  for (k, cfg), f in counts["flops"].items():
    lines.append(f"  K={k:<4} {'with CFG   ' if cfg else 'without CFG'} {f / 1e9:9.3f} GFLOP")
  return "\n".join(lines)


def main(argv):
  del argv
  config = flags.FLAGS.config
  configlib.validate(config, choices={"model_name": models.NAMES})
  print(report(config, count(config)))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Model config file.", lock_config=True)
  flags.mark_flags_as_required(["config"])
  configlib.run(main)
