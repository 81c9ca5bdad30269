"""The training loop of the judge's own models (the tagger, the contrastive model).

It has the LM trainer's habits at a smaller scale: AdamW from `optim.py` with its key names, a
time budget (`train.max_minutes`) beside the step budget, orbax checkpoints in
<workdir>/checkpoints (a rerun resumes; the batch is a pure function of (seed, step), so a
resumed run sees the batches an uninterrupted one would), TensorBoard scalars, clu progress, and
a stop on a non-finite loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import json
import os
import time
from typing import Any

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
from flax import nnx

from almtok import checkpoint
from almtok import configlib
from almtok import optim

# The keys of `config.train` that make the optimiser.
OPTIMIZER_KEYS = ("learning_rate", "warmup_steps", "final_lr_fraction", "weight_decay", "b1",
                  "b2", "grad_clip")
# Loss: (model, batch) -> (scalar, metrics); what `fit` differentiates.
Loss = Callable[[nnx.Module, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def _train_step(graphdef, tx, loss_fn: Loss, settings: ml_collections.FrozenConfigDict):

  def train_step(state, batch, progress):
    def loss_of(params):
      return loss_fn(nnx.merge(graphdef, params), batch)

    (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
    lr = optim.budget_learning_rate(settings, state["step"], progress)
    opt_state = optim.set_learning_rate(state["opt_state"], lr)
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    grad_norm = optax.tree.norm(grads)
    new = dict(step=state["step"] + 1, params=optax.apply_updates(state["params"], updates),
               opt_state=opt_state)
    new, finite = optim.keep_if_finite(new, state, metrics["loss"], grad_norm)
    return new, dict(metrics, grad_norm=grad_norm, learning_rate=lr,
                     finite=finite.astype(jnp.float32))

  return jax.jit(train_step, donate_argnums=0)


def fit(model: nnx.Module, loss_fn: Loss, batch_at: Callable[[int], dict[str, np.ndarray]],
        config: ml_collections.ConfigDict, workdir: str,
        evaluate: Callable[[nnx.Module], Mapping[str, Any]] | None = None
        ) -> tuple[nnx.Module, int, float]:
  """Trains `model` on `batch_at(step)` until `config.train.num_steps` or `max_minutes`,
  resuming from <workdir>/checkpoints; returns (trained model, steps, training seconds).

  `evaluate(model)` -> {set: {name: value}} runs every `train.eval_every` steps; its floats go
  to TensorBoard."""
  from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top
  tc = config.train
  settings = ml_collections.FrozenConfigDict({k: tc[k] for k in OPTIMIZER_KEYS})
  tx = optim.make_optimizer(settings, injected_lr=True)
  graphdef, params = nnx.split(model, nnx.Param)
  state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
  train_seconds = 0.0
  latest = ckpt.latest_step()
  if latest is not None:
    state, meta, _ = ckpt.restore(latest, jax.eval_shape(lambda: state))
    train_seconds = float(meta.get("train_seconds", 0.0))
    logging.info("resumed from step %d", latest)
  step_fn = _train_step(graphdef, tx, loss_fn, settings)
  writer = metric_writers.create_default_writer(workdir)
  report_progress = periodic_actions.ReportProgress(num_train_steps=tc.num_steps, writer=writer)
  budget = 60.0 * tc.max_minutes
  step = int(state["step"])

  def save(at: int) -> None:
    ckpt.save(at, state, dict(step=at, train_seconds=train_seconds, config=config.to_dict()))

  start, resumed = time.monotonic(), train_seconds
  try:
    while step < tc.num_steps and train_seconds < budget:
      progress = np.float32(max(step / tc.num_steps, train_seconds / budget))
      state, metrics = step_fn(state, batch_at(step), progress)
      step += 1
      values = {k: float(v) for k, v in jax.device_get(metrics).items()}
      values.pop("finite")
      optim.check_finite(step, values)
      if step % tc.log_every == 0 or step == 1:
        writer.write_scalars(step, {f"train/{k}": v for k, v in values.items()})
      report_progress(step)
      train_seconds = resumed + time.monotonic() - start
      if evaluate is not None and tc.eval_every and step % tc.eval_every == 0:
        scores = evaluate(nnx.merge(graphdef, state["params"]))
        writer.write_scalars(step, {f"{name}/{k}": v for name, s in scores.items()
                                    for k, v in s.items() if isinstance(v, float)})
      if tc.checkpoint_every and step % tc.checkpoint_every == 0:
        save(step)
  finally:
    ckpt.wait()
  save(step)
  ckpt.wait()
  ckpt.close()
  writer.flush()
  writer.close()
  return nnx.merge(graphdef, state["params"]), step, train_seconds


def command(train_and_export: Callable[[ml_collections.ConfigDict, str], dict[str, Any]],
            check_config: Callable[[ml_collections.ConfigDict], None], what: str) -> None:
  """A trainer's command line: --config (checked before any work) and --workdir, then
  `train_and_export`; prints the test scores and where the export is."""
  config_flags.DEFINE_config_file("config", None, f"The {what}'s config file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumes from it).")
  flags.mark_flags_as_required(["config"])

  def main(argv):
    del argv
    config = flags.FLAGS.config
    check_config(config)
    if not flags.FLAGS.workdir:
      raise configlib.ConfigError("--workdir is required")
    summary = train_and_export(config, flags.FLAGS.workdir)
    print(json.dumps(summary["scores"], indent=1))
    print(f"{what}: {summary['weights']}")

  configlib.run(main)
