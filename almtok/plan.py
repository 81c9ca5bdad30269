r"""Dry run of a training config: what the job would do on its mesh, and whether it fits.

  python -m almtok.plan --config=configs/paper.py:base --num_devices=32
  python -m almtok.plan --config=configs/paper.py:large,arm=discrete --num_devices=64 \
      --config.mesh.data=2 --config.mesh.fsdp=32 --config.model.decoder.remat=dots

Reads no data and allocates no weights: the train step that `almtok.train` would run (same
objective, optimizer, EMA, gradient accumulation, shardings and donation) is traced on abstract
arrays of the config's global batch, compiled, and described:

  * the mesh, the rows each device takes per step and per micro-batch (`train.grad_accum`);
  * each parameter group's shape and sharding (block indices folded into `*`);
  * per-device memory: parameters, optimizer state and EMA weights (their shards' sizes), the
    batch, the compiled program's temporaries (activations kept for the backward pass,
    gradients, collective buffers: `memory_analysis().temp_size_in_bytes`) and the total (what
    the program holds at once: arguments + outputs - donated buffers it reuses + temporaries);
  * for each named accelerator, whether the total fits its memory.

`--num_devices=N` compiles for N forced CPU host devices, so that one machine plans for a pod
slice. The figures are then the CPU compiler's: TPU and GPU compilers fuse, lay out and
rematerialise differently, so a verdict keeps `--margin` (default 25%) of the memory free and
says "confirm on the device" when the total lies within that margin. `--num_devices=0` plans for
the devices present (on a TPU VM or GPU node, that compiler's own figures).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from almtok import configlib
from almtok import objective
from almtok import optim
from almtok import sharding
from almtok import state as state_lib
from almtok.quantizers import rvq

GIB = 2 ** 30
# Memory per chip or card, GiB (vendor figures: HBM of one TPU v4 / v5e / v5p chip, one H100
# SXM card).
ACCELERATORS = {"TPU v4": 32, "TPU v5e": 16, "TPU v5p": 95, "H100": 80}
MARGIN = 0.25


@dataclasses.dataclass(frozen=True)
class Group:
  """Parameters whose paths differ only in block indices."""
  path: str            # e.g. decoder/blocks/*/attn/qkv/kernel
  shape: tuple[int, ...]
  spec: str            # PartitionSpec, e.g. P('fsdp', None)
  count: int
  device_bytes: int    # All `count` parameters' shards on one device.


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one config's train step holds per device on one mesh."""
  mesh: dict[str, int]
  global_batch: int
  grad_accum: int
  dtype: str
  remat: str
  params: int                # Parameter count (all of them, unsharded).
  groups: tuple[Group, ...]
  param_bytes: int           # Per device, from here on.
  opt_bytes: int
  ema_bytes: int
  batch_bytes: int
  temp_bytes: int
  total_bytes: int
  compile_seconds: float

  @property
  def devices(self) -> int:
    return int(np.prod(list(self.mesh.values())))

  @property
  def rows_per_device(self) -> float:
    return self.global_batch / self.devices

  @property
  def micro_rows_per_device(self) -> float:
    return self.rows_per_device / self.grad_accum


def shard_bytes(x, layout: jax.sharding.Sharding) -> int:
  """Bytes of one device's shard of array `x` laid out by `layout`."""
  return int(np.prod(layout.shard_shape(tuple(x.shape)))) * np.dtype(x.dtype).itemsize


def device_bytes(tree, shardings) -> int:
  """Bytes that one device holds of the arrays of `tree` laid out by `shardings`."""
  return sum(shard_bytes(x, s) for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def parameter_groups(params, shardings) -> tuple[Group, ...]:
  """Parameters grouped by path with block indices folded, in the model's order."""
  groups: dict[tuple[str, tuple[int, ...], str], list[int]] = {}
  for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree.leaves(shardings)):
    name = re.sub(r"(^|/)\d+(?=/|$)", r"\1*", sharding.path_str(path))
    key = (name, tuple(x.shape), str(s.spec))
    groups.setdefault(key, []).append(shard_bytes(x, s))
  return tuple(Group(name, shape, spec, len(sizes), sum(sizes))
               for (name, shape, spec), sizes in groups.items())


def plan(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Plan:
  """Compiles `config`'s train step on `mesh` (abstract inputs) and measures it."""
  objective.check_config(config)
  global_batch, accum = config.data.batch_size, config.train.grad_accum
  if (global_batch // accum) % mesh.size:
    raise configlib.ConfigError(
        f"config.train.grad_accum={accum}: micro-batches of {global_batch // accum} rows do not "
        f"divide over the {mesh.size} devices of mesh {dict(mesh.shape)}")
  tx = optim.make_optimizer(config.train)
  graphdef, state, state_sh = state_lib.abstract_state(config, mesh, tx)
  quantizer = None
  if config.model_name == "discrete_lm":   # Codebooks' values do not change what compiles.
    m = config.model
    quantizer = rvq.RVQ(np.zeros((m.num_codebooks, m.codebook_size, objective.token_dim(config)),
                                 np.float32))
  repl = sharding.replicated(mesh)
  step_fn = jax.jit(objective.make_train_step(config, graphdef, tx, state_lib.make_schedule(config),
                                              quantizer),
                    out_shardings=(state_sh, repl), donate_argnums=(0,))
  state_in = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          state, state_sh)
  batch = objective.abstract_batch(config, global_batch, mesh)
  rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=repl)
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step_fn.lower(state_in, batch, rng).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  batch_sh = jax.tree.map(lambda a: a.sharding, batch)
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  return Plan(
      mesh=dict(mesh.shape), global_batch=global_batch, grad_accum=accum,
      dtype=config.dtype, remat=str(config.model.decoder.remat),
      params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"])),
      groups=parameter_groups(state["params"], state_sh["params"]),
      param_bytes=device_bytes(state["params"], state_sh["params"]),
      opt_bytes=device_bytes(state["opt_state"], state_sh["opt_state"]),
      ema_bytes=device_bytes(state["ema"], state_sh["ema"]),
      batch_bytes=device_bytes(batch, batch_sh), temp_bytes=int(memory.temp_size_in_bytes),
      total_bytes=int(total), compile_seconds=seconds)


def verdict(total_bytes: int, capacity_gib: float, margin: float = MARGIN) -> str:
  """"fits", "confirm on the device" (within the margin) or "does not fit"."""
  used = total_bytes / (capacity_gib * GIB)
  if used <= 1.0 - margin:
    return "fits"
  if used <= 1.0:
    return "confirm on the device"
  return "does not fit"


def describe(p: Plan, margin: float = MARGIN) -> str:
  """The plan as the text `python -m almtok.plan` prints."""
  def gib(n: int) -> str:
    return f"{n / GIB:8.2f} GiB" if n >= GIB // 10 else f"{n / 2 ** 20:8.2f} MiB"

  shape = " x ".join(f"{k}={v}" for k, v in p.mesh.items())
  lines = [
      f"mesh         {shape} ({p.devices} devices)",
      f"model        {p.params / 1e6:.2f}M parameters, compute {p.dtype}, remat {p.remat}",
      f"batch        {p.global_batch} rows per step: {p.rows_per_device:g} per device, "
      f"{p.grad_accum} micro-batch(es) of {p.micro_rows_per_device:g} per device",
      "", "parameter groups (sharding, size per device):"]
  width = max(len(g.path) for g in p.groups)
  for g in p.groups:
    count = f" x{g.count}" if g.count > 1 else ""
    lines.append(f"  {g.path:<{width}}  {str(list(g.shape)):<14} {g.spec:<22} "
                 f"{g.device_bytes / 2 ** 20:9.2f} MiB{count}")
  lines += ["", "memory per device (compiled):",
            f"  parameters          {gib(p.param_bytes)}",
            f"  optimizer state     {gib(p.opt_bytes)}",
            f"  EMA weights         {gib(p.ema_bytes)}",
            f"  batch               {gib(p.batch_bytes)}",
            f"  temporaries         {gib(p.temp_bytes)}   (activations, gradients, buffers)",
            f"  total               {gib(p.total_bytes)}",
            "", f"fits? (keeping {margin:.0%} free; compiled for "
            f"{jax.devices()[0].platform.upper()})"]
  for name, capacity in ACCELERATORS.items():
    lines.append(f"  {name:<8} {capacity:3d} GiB  {p.total_bytes / (capacity * GIB):6.1%}  "
                 f"{verdict(p.total_bytes, capacity, margin)}")
  lines.append(f"\ncompiled in {p.compile_seconds:.1f} s")
  return "\n".join(lines)


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  config_flags.DEFINE_config_file("config", None, "Training config to plan.", lock_config=True)
  flags.DEFINE_integer("num_devices", 8, "Forced CPU host devices to compile for (0: the "
                       "devices present).")
  flags.DEFINE_float("margin", MARGIN, "Share of an accelerator's memory to keep free.")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  f = flags.FLAGS
  objective.check_config(f.config)
  if f.num_devices < 0:
    raise configlib.ConfigError(f"--num_devices={f.num_devices}: must be >= 0")
  if not 0.0 <= f.margin < 1.0:
    raise configlib.ConfigError(f"--margin={f.margin}: must be in [0, 1)")
  if f.num_devices:   # Before anything asks JAX for its devices.
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", f.num_devices)
    # Keep bfloat16 buffers bfloat16: by default XLA on CPU drops f32 -> bf16 -> f32 round trips
    # and holds such values in float32, unlike the accelerators planned for.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_allow_excess_precision=false")
  try:
    mesh = sharding.make_mesh(f.config.mesh.data, f.config.mesh.fsdp)
  except ValueError as e:
    raise configlib.ConfigError(f"config.mesh: {e}") from None
  print(describe(plan(f.config, mesh), f.margin))


if __name__ == "__main__":
  define_flags()
  configlib.run(main)

