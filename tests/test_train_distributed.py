"""The trainer on several devices and several processes, on one CPU machine.

* 8 forced host devices, mesh data=2 x fsdp=4: the large matrices of the train state are split
  over `fsdp` (each device holds a quarter), and a few steps on one global batch give the losses
  and parameters of the same steps on a single device.
  With grad_accum 4 the same devices give the update of the whole batch.
* 2 processes x 2 forced host devices joined by `jax.distributed` (gloo collectives): the CLI's
  `--multihost` run gives the losses of a single-process run that reads the same examples.

The subprocesses compile with LLVM at -O0 (`test_train.FAST_COMPILE`, as every trainer
subprocess of the tests does), which cuts the compile time that dominates these tests; every pair
of runs compared shares the flag.

Float tolerances, and why they are not zero: a sharded step sums the batch mean and the
gradients in a different order (per-device partial sums, then an all-reduce), so each float32
reduction can differ in its last bits (relative 1e-7). Over a few steps of warm-up-scaled Adam
this stays below 1e-5 relative in the loss and 1e-6 absolute in the parameters; a wrong batch,
a wrong shard or a missing all-reduce changes the loss in the third decimal.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np

from tests.test_train import (ROOT, STEPS, TIMEOUT_S, Trainer, cli_args, event_file,
                              read_events, subprocess_env)

# A few steps of the train step on 8 devices (data=2, fsdp=4) and on 1 device, same global
# batch; prints the state's shardings and the losses as JSON on its last line.
_FSDP_SCRIPT = r"""
import json
import jax
import numpy as np
from almtok import objective, optim, sharding
from almtok import state as state_lib
from almtok.text.minilm import TextEmbedding
from configs import synth_small

assert jax.device_count() == 8, jax.devices()
config = synth_small.get_config("size=tiny,steps=16,batch=8")
config.update_from_flattened_dict({"data.seq_len": 20})
b, l, c = 8, 20, config.model.token_dim
n, e = config.model.text_len, config.model.text_dim
rng = np.random.default_rng(0)
mask_BxL = np.arange(l)[None, :] < np.array([l, 13, l, l, 7, l, l, l])[:, None]
text_mask_BxN = np.arange(n)[None, :] < rng.integers(1, n + 1, size=(b,))[:, None]
host = {"x_BxLxC": rng.standard_normal((b, l, c), dtype=np.float32), "mask_BxL": mask_BxL,
        "tokens": rng.standard_normal((b, n, e), dtype=np.float32) * text_mask_BxN[:, :, None],
        "text_mask": text_mask_BxN, "pooled": rng.standard_normal((b, e), dtype=np.float32)}
tx = optim.make_optimizer(config.train)
schedule = state_lib.make_schedule(config)


# (initial state, the jitted train step, the global batch) of `config` on `mesh`.
def setup(config, mesh, host):
  graphdef, state, state_sh = state_lib.init_state(config, mesh, tx)
  step = jax.jit(objective.make_train_step(config, graphdef, tx, schedule),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  a = sharding.global_batch(host, mesh)
  return state, step, {"x_BxLxC": a["x_BxLxC"], "mask_BxL": a["mask_BxL"],
                       "text": TextEmbedding(a["tokens"], a["text_mask"], a["pooled"])}


out = {}
for name, mesh in (("fsdp", sharding.make_mesh(2, 4)),
                   ("single", sharding.make_mesh(1, 1, jax.devices()[:1]))):
  with jax.set_mesh(mesh):
    state, step, batch = setup(config, mesh, host)
    if name == "fsdp":
      out["leaves"] = {
          sharding.path_str(path): {
              "spec": [list(p) if isinstance(p, tuple) else p for p in x.sharding.spec],
              "shape": list(x.shape),
              "shards": sorted({tuple(s.data.shape) for s in x.addressable_shards}),
              "devices": len(x.sharding.device_set)}
          for path, x in jax.tree_util.tree_leaves_with_path(state)}
    losses = []
    for _ in range(4):
      state, metrics = step(state, batch, jax.random.PRNGKey(0))
      losses.append(float(metrics["loss"]))
    out[name] = losses
    out[name + "_params"] = [np.asarray(p) for p in jax.tree.leaves(state["params"])]
diff = max(float(np.max(np.abs(p - q))) for p, q in zip(out.pop("fsdp_params"),
                                                        out.pop("single_params")))

# Gradient accumulation over the 8 devices: one step of batch 32 (rows of random lengths) with
# grad_accum 1 and 4; each micro-batch of 8 rows is spread over all 8 devices.
mesh = sharding.make_mesh(2, 4)
lengths = rng.integers(1, l + 1, size=(32,))
mask32 = np.arange(l)[None, :] < lengths[:, None]
tmask32 = np.arange(n)[None, :] < rng.integers(1, n + 1, size=(32,))[:, None]
host32 = {"x_BxLxC": rng.standard_normal((32, l, c), dtype=np.float32), "mask_BxL": mask32,
          "tokens": rng.standard_normal((32, n, e), dtype=np.float32) * tmask32[:, :, None],
          "text_mask": tmask32, "pooled": rng.standard_normal((32, e), dtype=np.float32)}
accum_out = {}
for accum in (1, 4):
  config32 = synth_small.get_config("size=tiny,steps=16,batch=32")
  config32.update_from_flattened_dict({"data.seq_len": 20, "train.grad_accum": accum})
  with jax.set_mesh(mesh):
    state, step, batch = setup(config32, mesh, host32)
    state, metrics = step(state, batch, jax.random.PRNGKey(0))
    accum_out[accum] = (float(metrics["loss"]), float(metrics["grad_norm"]),
                        [np.asarray(p) for p in jax.tree.leaves(state["params"])])
accum_diff = max(float(np.max(np.abs(p - q))) for p, q in zip(accum_out[1][2], accum_out[4][2]))
print(json.dumps(dict(out, max_param_diff=diff, accum_loss=[accum_out[k][0] for k in (1, 4)],
                      accum_grad_norm=[accum_out[k][1] for k in (1, 4)],
                      accum_max_param_diff=accum_diff)))
"""

# `python -m almtok.train` in one process, whose train split reads what two processes of a
# `--multihost` run read: process i's batches (its records `[i::2]`, shuffled alike) side by
# side, process 0's rows first, as the global mesh lays the processes' devices out.
_TWO_SHARDS_SCRIPT = r"""
import numpy as np
from almtok import configlib, train
from almtok.latents import pipeline

make_dataset = pipeline.make_dataset


class SideBySide:
  def __init__(self, parts):
    self.parts = [iter(p) for p in parts]

  def __iter__(self):
    return self

  def __next__(self):
    batches = [next(p) for p in self.parts]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def get_state(self):
    return {str(i): p.get_state() for i, p in enumerate(self.parts)}

  def set_state(self, state):
    for i, p in enumerate(self.parts):
      p.set_state(state[str(i)])


def two_process_dataset(latents_dir, split, *, batch_size, **kwargs):
  if split != "train":
    return make_dataset(latents_dir, split, batch_size=batch_size, **kwargs)
  return SideBySide([make_dataset(latents_dir, split, batch_size=batch_size // 2,
                                  process_index=i, process_count=2, **kwargs)
                     for i in range(2)])


pipeline.make_dataset = two_process_dataset
if __name__ == "__main__":
  train.define_flags()
  configlib.run(train.main)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_fsdp_over_8_devices_splits_the_matrices_and_matches_one_device(jax_cache):
  proc = subprocess.run([sys.executable, "-c", _FSDP_SCRIPT], cwd=ROOT, capture_output=True,
                        text=True, env=subprocess_env(jax_cache, devices=8), timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  leaves = out["leaves"]

  # The decoder's and the head's matrices, in the parameters, their EMA and Adam's moments.
  kernels = [n[len("params/"):] for n in leaves
             if re.match(r"params/(decoder|head)/.*/kernel$", n)]
  assert len(kernels) >= 8 + 6, sorted(leaves)  # At least the blocks' matrices.
  for kernel in kernels:
    for tree in ("params/", "ema/", "opt_state/1/0/mu/", "opt_state/1/0/nu/"):
      x = leaves[tree + kernel]
      assert x["spec"][0] == "fsdp" and x["devices"] == 8, (tree + kernel, x)
      assert x["shards"] == [[x["shape"][0] // 4] + x["shape"][1:]], (tree + kernel, x)
  # Vectors stay whole; embeddings are split along their width.
  norm = leaves["params/decoder/norm/scale"]
  assert norm["shards"] == [norm["shape"]]
  offsets = leaves["params/offset_embed/embedding"]
  assert offsets["spec"] == [None, "fsdp"], offsets
  # No leaf of 2048 or more entries (parameters, EMA, Adam's moments) is replicated.
  whole = [n for n, x in leaves.items() if np.prod(x["shape"]) >= 2048 and "fsdp" not in x["spec"]]
  assert not whole, whole
  # Each device holds about a quarter of the parameters (vectors are a small part).
  params = {n: x for n, x in leaves.items() if n.startswith("params/")}
  total = sum(np.prod(x["shape"]) for x in params.values())
  per_device = sum(np.prod(x["shards"][0]) for x in params.values())
  assert per_device < 0.3 * total, (per_device, total)

  np.testing.assert_allclose(out["fsdp"], out["single"], rtol=1e-5)
  assert out["max_param_diff"] < 1e-6, out["max_param_diff"]
  # Accumulating 4 micro-batches on 8 devices gives the update of the whole batch.
  np.testing.assert_allclose(out["accum_loss"][1], out["accum_loss"][0], rtol=2e-6)
  np.testing.assert_allclose(out["accum_grad_norm"][1], out["accum_grad_norm"][0], rtol=1e-5)
  assert out["accum_max_param_diff"] < 1e-6, out["accum_max_param_diff"]


def test_two_processes_match_one_process_reading_the_same_examples(tiny_latents, jax_cache,
                                                                   tmp_path):
  overrides = dict(train__checkpoint_every=0, train__eval_every=0, train__sample_every=0)
  port = _free_port()
  workers = []
  for i in range(2):
    args = cli_args(tiny_latents, str(tmp_path / "two"), **overrides) + [
        "--multihost", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
        f"--process_id={i}"]
    workers.append(Trainer(args, subprocess_env(jax_cache, devices=2)))
  try:
    codes = [w.wait() for w in workers]
  finally:
    for w in workers:
      if w.proc.poll() is None:
        w.proc.kill()
  assert codes == [0, 0], "\n".join(w.tail() for w in workers)
  assert re.search(r"mesh \{'data': 4, 'fsdp': 1\} over 4 devices, 2 processes",
                   workers[0].output), workers[0].tail()
  # Only process 0 writes files: one event file, one config.json, and the final checkpoint.
  two = str(tmp_path / "two")
  assert event_file(two, workers[1].pid) is None
  assert os.path.exists(os.path.join(two, "config.json"))
  assert os.listdir(os.path.join(two, "checkpoints")) == [str(STEPS)]

  one = Trainer(["-c", _TWO_SHARDS_SCRIPT] + cli_args(tiny_latents, str(tmp_path / "one"),
                                                       **overrides)[2:],
                subprocess_env(jax_cache))
  assert one.wait() == 0, one.tail()
  want = read_events(event_file(str(tmp_path / "one"), one.pid))["loss"]
  got = read_events(event_file(two, workers[0].pid))["loss"]
  assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
  steps = sorted(want)
  # Step 1 runs on the initial parameters: only the reductions' order differs.
  np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
  np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps], rtol=1e-5)
