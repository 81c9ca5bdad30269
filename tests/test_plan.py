"""The dry-run planner (`python -m almtok.plan`) and the memory levers it measures.

* On 8 forced host devices (a subprocess: the device count is fixed when JAX starts), the
  planner compiles the tiny config and the paper's continuous Base and reports each parameter
  group's sharding and the per-device memory; under FSDP no leaf of the Base train state
  (parameters, EMA, Adam's moments) with 2^16 entries or more is whole on a device.
* Remat policies on a scanned decoder stack give the same loss and gradient, and lower the
  compiled temporaries: full < dots < none.
* bfloat16 compute tracks float32 over a few steps of the tiny model within 2e-3 relative (in a
  subprocess with `--xla_allow_excess_precision=false`, without which XLA on CPU removes the
  f32 -> bf16 -> f32 round trips and computes in float32).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from almtok import objective
from almtok import optim
from almtok import sharding
from almtok import state as state_lib
from configs import synth_small
from tests.test_train import FAST_COMPILE, ROOT, TIMEOUT_S

# The tiny and Base plans on 8 devices, and the shardings of every leaf of the Base train state.
_PLAN_SCRIPT = r"""
import json
import jax
import numpy as np
from almtok import optim, plan, sharding
from almtok import state as state_lib
from configs import paper, synth_small

assert jax.device_count() == 8, jax.devices()
tiny = synth_small.get_config("size=tiny,batch=16")
tiny.update_from_flattened_dict({"mesh.fsdp": 8, "data.seq_len": 20})
base = paper.get_config("base")
base.update_from_flattened_dict({"mesh.fsdp": 8, "data.batch_size": BASE_BATCH,
                                 "train.grad_accum": 1, "model.decoder.remat": "full"})
out = {}
for name, config in (("tiny", tiny), ("base", base)):
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  p = plan.plan(config, mesh)
  out[name] = dict(text=plan.describe(p), params=p.params, param_bytes=p.param_bytes,
                   opt_bytes=p.opt_bytes, ema_bytes=p.ema_bytes, temp_bytes=p.temp_bytes,
                   total_bytes=p.total_bytes, rows=p.micro_rows_per_device)
  _, state, shardings = state_lib.abstract_state(config, mesh, optim.make_optimizer(config.train))
  out[name]["whole"] = [
      sharding.path_str(path) for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(state),
                                                      jax.tree.leaves(shardings))
      if x.size >= 2 ** 16 and s.shard_shape(x.shape) == tuple(x.shape)]
print(json.dumps(out))
"""
BASE_BATCH = 16   # Two sequences of 10 s per device: the memory per row, not the paper's batch.


def _env(jax_cache: str, **extra) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax_cache, JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT, **extra)
  return env


@pytest.fixture(scope="module")
def plans(jax_cache):
  # LLVM at -O0 compiles faster; what the plan reads (buffer sizes) is decided before LLVM.
  env = _env(jax_cache, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
  proc = subprocess.run(
      [sys.executable, "-c", _PLAN_SCRIPT.replace("BASE_BATCH", str(BASE_BATCH))], cwd=ROOT,
      capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_plan_names_the_mesh_shardings_memory_and_verdicts(plans):
  text = plans["tiny"]["text"]
  assert text.startswith("mesh         data=1 x fsdp=8 (8 devices)"), text
  assert "16 rows per step: 2 per device, 1 micro-batch(es) of 2 per device" in text
  assert "decoder/blocks/*/attn/qkv/kernel" in text and "P('fsdp', None)" in text
  for line in ("parameters", "optimizer state", "EMA weights", "temporaries", "total"):
    assert f"\n  {line}" in text, line
  for accelerator, gib in (("TPU v4", 32), ("TPU v5e", 16), ("TPU v5p", 95), ("H100", 80)):
    assert re.search(rf"\n  {accelerator} +{gib} GiB +[0-9.]+%  fits\n", text), text
  base = plans["base"]
  assert "decoder/layers/attn/qkv/kernel" in base["text"], base["text"]
  assert "P(None, 'fsdp', None)" in base["text"]


def test_fsdp_leaves_no_large_leaf_whole_and_the_memory_adds_up(plans):
  base = plans["base"]
  assert not base["whole"], base["whole"]
  # Parameters are float32 and almost all of them split 8 ways; Adam keeps two moments.
  assert abs(base["params"] / 193e6 - 1) < 0.03
  assert 4 * base["params"] / 8 <= base["param_bytes"] < 1.05 * 4 * base["params"] / 8
  assert abs(base["opt_bytes"] / (2 * base["param_bytes"]) - 1) < 0.01
  assert base["ema_bytes"] == base["param_bytes"]
  state = base["param_bytes"] + base["opt_bytes"] + base["ema_bytes"]
  assert base["total_bytes"] >= state + base["temp_bytes"] * 0.5
  assert base["temp_bytes"] > 0 and base["rows"] == BASE_BATCH / 8


def test_a_mesh_that_does_not_fit_the_devices_is_one_line(jax_cache):
  proc = subprocess.run(
      [sys.executable, "-m", "almtok.plan", "--config=configs/synth_small.py:size=tiny",
       "--num_devices=8", "--config.mesh.fsdp=3"], cwd=ROOT, capture_output=True, text=True,
      env=_env(jax_cache), timeout=TIMEOUT_S)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines[-1] == "error: config.mesh: mesh data=-1 x fsdp=3 does not match the 8 devices", (
      lines[-3:])


def _compiled_step(remat: str):
  """(temporaries of the compiled step in bytes, its loss and grad norm) for the tiny config
  with a scanned decoder stack under `remat`."""
  config = synth_small.get_config("size=tiny,steps=16,batch=8")
  config.update_from_flattened_dict({"data.seq_len": 20, "model.decoder.remat": remat,
                                     "model.decoder.scan_layers": True})
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  with jax.set_mesh(mesh):
    tx = optim.make_optimizer(config.train)
    graphdef, state, _ = state_lib.init_state(config, mesh, tx)
    step = jax.jit(objective.make_train_step(config, graphdef, tx, state_lib.make_schedule(config)))
    batch = jax.tree.map(lambda s: jax.numpy.asarray(
        np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype)
        if s.dtype != bool else np.ones(s.shape, bool)), objective.abstract_batch(config, 8))
    compiled = step.lower(state, batch, jax.random.PRNGKey(0)).compile()
    _, metrics = compiled(state, batch, jax.random.PRNGKey(0))
  return (compiled.memory_analysis().temp_size_in_bytes, float(metrics["loss"]),
          float(metrics["grad_norm"]))


def test_remat_policies_keep_the_loss_and_lower_the_memory():
  temp, loss, grad = zip(*(_compiled_step(r) for r in ("none", "dots", "full")))
  np.testing.assert_allclose(loss, loss[0], rtol=1e-6)
  np.testing.assert_allclose(grad, grad[0], rtol=1e-5)
  assert temp[2] < temp[1] < temp[0], temp


_BF16_SCRIPT = r"""
import json
import numpy as np
from tests import test_train_step as t
out = {}
for dtype in ("float32", "bfloat16"):
  config = t._config(learning_rate=1e-2, warmup_steps=1)
  config.dtype = dtype
  out[dtype] = [m["loss"] for m in t._run(config, num_steps=8)[1]]
print(json.dumps(out))
"""


def test_bfloat16_training_tracks_float32(jax_cache):
  env = _env(jax_cache, XLA_FLAGS=f"--xla_allow_excess_precision=false {FAST_COMPILE}")
  proc = subprocess.run([sys.executable, "-c", _BF16_SCRIPT], cwd=ROOT, capture_output=True,
                        text=True, env=env, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  f32, bf16 = np.asarray(out["float32"]), np.asarray(out["bfloat16"])
  rel = np.abs(bf16 - f32) / f32
  # bf16 is in use (the losses differ once the head's output layer has moved from zero) ...
  assert rel.max() > 1e-6, rel
  # ... and stays close: bf16 keeps 8 bits of mantissa, the loss is accumulated in float32.
  assert rel.max() < 2e-3, rel
