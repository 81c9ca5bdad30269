"""Model FLOPs of a train step, and the peak FLOP/s that MFU divides by.

MFU = achieved model FLOP/s / (peak FLOP/s per device x devices). On known accelerators the
peak is the vendor's dense figure from `PEAKS`; on anything else (CPUs) it is measured: the
median of several timed float32 matmuls after a warm-up, reported as an estimate. A peak taken
from a single short burst while other threads are busy reads low and inflates MFU.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# Dense peak FLOP/s per device (one chip; for GPUs the SXM part) by compute dtype, from the
# vendors' spec sheets. float32 on TPUs runs through the bf16 MXU at default precision; on
# Ampere and later GPUs XLA runs float32 matmuls as TF32 by default, so those are TF32 figures.
# Matched against `jax.Device.device_kind` as whole words ('L4' is not 'L40S'); the first match
# wins, so 'v5 lite' comes before 'v5'.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("TPU v6", {"bfloat16": 918e12, "float32": 918e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5p", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("TPU v3", {"bfloat16": 123e12, "float32": 123e12}),
    ("H200", {"bfloat16": 989e12, "float32": 494e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60e12}),
    ("V100", {"float16": 125e12, "float32": 15.7e12}),   # No bfloat16 units.
)


class Peak(NamedTuple):
  flops_per_s: float   # Per device.
  source: str          # Where the figure comes from, for the log.


def table_peak(device_kind: str, dtype: str) -> float | None:
  """The spec-sheet peak of a device kind for a compute dtype, or None when it is not known."""
  for name, peaks in PEAKS:
    if re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device_kind, re.I):
      return peaks.get(dtype)
  return None


@jax.jit
def _matmul(a):
  return a @ a


def measure_matmul_peak(n: int = 1024, repeats: int = 5, trials: int = 7,
                        timer: Callable[[], float] = time.perf_counter) -> float:
  """float32 matmul FLOP/s of the first device: the median over `trials` timings of `repeats`
  matmuls each, after a compile and a warm-up trial."""
  a = jnp.ones((n, n), jnp.float32)
  f = _matmul
  f(a).block_until_ready()

  def trial() -> float:
    start = timer()
    for _ in range(repeats):
      f(a).block_until_ready()
    return 2 * n ** 3 * repeats / max(timer() - start, 1e-12)

  trial()
  return statistics.median(trial() for _ in range(trials))


def peak(dtype: str, override: float = 0.0, device: jax.Device | None = None,
         measure: Callable[[], float] = measure_matmul_peak) -> Peak:
  """The per-device peak that MFU divides by: `override` if set, the table, or a measurement."""
  if override:
    return Peak(override, "config.train.peak_flops")
  device = device or jax.devices()[0]
  known = table_peak(device.device_kind, dtype)
  if known is not None:
    return Peak(known, f"spec sheet, {device.device_kind} {dtype}")
  return Peak(measure(), f"estimate: median float32 matmul rate measured on {device.device_kind}")


# The one FLOP counter: multiply-adds count 2; matmuls (Linear kernels) and attention scores and
# values are counted, norms and activations are not. The trainer's MFU and param_count's
# generation FLOPs are both built from these.


def matmul_params(module: nnx.Module) -> int:
  """Parameters that multiply activations (Linear kernels): FLOPs / 2 per row."""
  return sum(v.size for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))
             if p[-1] == "kernel")


def decoder_flops(model, config, positions: float, context: float) -> float:
  """Forward FLOPs of the decoder for `positions` new positions, each attending to `context`."""
  dec = config.model.decoder
  return (2 * matmul_params(model.decoder) * positions
          + 2 * 2 * dec.num_layers * positions * context * dec.width)


def head_flops(model, rows: float) -> float:
  """Forward FLOPs of one head evaluation (the denoiser, or the softmax heads) on `rows` rows."""
  return 2 * matmul_params(model.head) * rows


def _is_discrete(config) -> bool:
  return config.model_name == "discrete_lm"


def train_flops_per_step(config, graphdef, abstract_params) -> float:
  """Analytic model FLOPs of one step (forward + backward = 3x forward; matmuls + attention).

  The continuous LM's head runs `diffusion.batch_mul` times per token; the discrete baseline's
  head (its Q softmax layers) once per step, and its pattern adds `delay` steps per sequence.
  """
  model = nnx.merge(graphdef, abstract_params)
  b, l = config.data.batch_size, config.data.seq_len
  copies = 2 if config.loss.mntp_weight > 0 else 1
  if _is_discrete(config):
    l += model.delay
  s = model.prefix_len + l
  decoder = decoder_flops(model, config, s, s)
  head = head_flops(model, l * (1 if _is_discrete(config) else config.diffusion.batch_mul))
  return 3.0 * b * copies * (decoder + head)


def generation_flops(model, config, steps: int, guided: bool) -> dict[str, float]:
  """FLOPs per generated token: one decoder step at the average context of a full-length clip
  (plus the input projection) and `steps` head evaluations; guidance doubles both.

  For the discrete baseline a token is one pattern step: one decoder step and one evaluation of
  its softmax heads (its input is an embedding lookup, no matmul); `steps` does not apply.
  """
  context = model.prefix_len + model.max_len / 2
  if _is_discrete(config):
    step = decoder_flops(model, config, 1, context)
    head = head_flops(model, 1)
    return {"context": context, "decoder_step": step, "head_eval": head,
            "total": (1 + guided) * (step + head)}
  step = decoder_flops(model, config, 1, context) + 2 * matmul_params(model.in_proj)
  head = head_flops(model, 1)
  return {"context": context, "decoder_step": step, "head_eval": head,
          "total": (1 + guided) * (step + steps * head)}
