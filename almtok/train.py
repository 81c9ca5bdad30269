r"""Trains the audio LM on prepared latents.

  python -m almtok.train --config=configs/synth_small.py --workdir=/tmp/lm \
      --config.data.latents_dir=/tmp/prep/latents

The run resumes by itself from the newest checkpoint in --workdir, saves and exits cleanly on
SIGTERM, and stops with one line naming the step and the metric when the loss or gradient is
not finite (the last good checkpoint stays). Only process 0 writes logs and files.

On several hosts, pass --multihost (and, off TPU pods and SLURM, --coordinator_address,
--num_processes and --process_id) so that `jax.distributed.initialize` runs first.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import signal
import time
from typing import Any

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
from flax import nnx

from almtok import checkpoint
from almtok import configlib
from almtok import fileio
from almtok import flops
from almtok import objective
from almtok import optim
from almtok import plotting
from almtok import sample
from almtok import sharding
from almtok import state as state_lib
from almtok import tokenizers
from almtok.latents import pipeline
from almtok.latents import store as latents_lib
from almtok.quantizers import rvq
from almtok.text.cache import TextEmbeddingCache
from almtok.text.minilm import TextEncoder



def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 argv: list[str] | None = None) -> None:
  """The command line (defined only when run as a program, so that tests can import this);
  `argv` (default sys.argv) is where the config flag reads its `--config.*` overrides."""
  config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True,
                                  flag_values=flag_values, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "Checkpoints, logs and samples go here.",
                      flag_values=flag_values)
  flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.",
                    flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0.",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Processes in the job.", flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "This process's index.", flag_values=flag_values)
  flags.mark_flags_as_required(["config"], flag_values=flag_values)


class WorkdirLockedError(configlib.FatalError):
  """Another training process holds the workdir."""


# ----------------------------------------------------------------------------------------------
# Pieces that the tests and the benchmarks call directly.
# ----------------------------------------------------------------------------------------------


# Keys (globs over dotted paths) whose value may differ between the config stored with a
# checkpoint and the one that resumes it: budgets, logging, evaluation, sampling, where the data
# is read from, how the work is laid out (accumulation changes memory, not the update), and the
# EMA (an average of the trained weights, not part of the objective).
RESUMABLE_KEYS = (
    "train.num_steps", "train.max_minutes", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_every", "train.eval_batches", "train.sample_*",
    "train.peak_flops", "train.grad_accum", "train.ema_*", "data.latents_dir",
    "data.worker_count", "data.text_cache", "mesh.*", "sharding_rules", "sample.*",
    "model.decoder.remat",   # Memory, not math: the same loss with any policy.
    "quantizer.*",   # May move; its codebooks are checked against the run's copy instead.
)


def check_resume(stored: dict[str, Any], config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses to resume a checkpoint with a config that changes the model or the objective."""
  new = dict(configlib.leaves(ml_collections.ConfigDict(json.loads(config.to_json()))))
  old = dict(configlib.leaves(ml_collections.ConfigDict(stored)))
  for key in sorted(set(old) | set(new)):
    if old.get(key) == new.get(key) or any(fnmatch.fnmatchcase(key, g) for g in RESUMABLE_KEYS):
      continue
    if key not in old:
      raise configlib.ConfigError(
          f"config.{key}: the checkpoint in {workdir} was saved by an almtok without this key, "
          f"and a model or objective key cannot change on resume; use a new --workdir")
    if key not in new:
      raise configlib.ConfigError(
          f"config.{key}: the checkpoint in {workdir} was trained with it set to "
          f"{old[key]!r}, and this config has no such key; use a new --workdir")
    raise configlib.ConfigError(
          f"config.{key}={new.get(key)!r}: the checkpoint in {workdir} was trained with "
          f"{old.get(key)!r}, and a model or objective key cannot change on resume (what can: "
          f"almtok.train.RESUMABLE_KEYS); use a new --workdir")


def check_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """What must hold before a run touches its workdir: the data, the devices, the checkpoint."""
  where = config.data.latents_dir
  if not where:
    raise configlib.ConfigError("config.data.latents_dir is empty: set "
                                "--config.data.latents_dir to the latents of `almtok.prepare`")
  if not os.path.isdir(where):
    raise configlib.ConfigError(f"config.data.latents_dir={where}: no such directory")
  try:
    stats = latents_lib.read_stats(where)
    if not latents_lib.shard_paths(where, "train", stats):
      raise ValueError("its train split holds no records")
    if ((config.train.eval_every or config.train.sample_every)
        and not latents_lib.shard_paths(where, "validation", stats)):
      raise ValueError("its validation split holds no records, and train.eval_every or "
                       "train.sample_every needs them (set both to 0 to train without)")
  except (OSError, ValueError, KeyError) as e:
    raise configlib.ConfigError(f"config.data.latents_dir={where}: {e}") from None
  if config.model_name == "discrete_lm":
    load_quantizer(config, stats)
  elif config.model.token_dim != stats.latent_dim:
    raise configlib.ConfigError(
        f"config.model.token_dim={config.model.token_dim}: the latents in {where} have "
        f"{stats.latent_dim} channels ({stats.tokenizer.name} tokens); train on them with "
        f"--config.model.token_dim={stats.latent_dim} or a config for that tokenizer")
  n = jax.device_count()
  try:
    sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, n)
  except ValueError as e:
    raise configlib.ConfigError(f"config.mesh: {e}") from None
  rows = config.data.batch_size // config.train.grad_accum
  if rows % n:
    raise configlib.ConfigError(
        f"config.data.batch_size={config.data.batch_size}: each of the "
        f"{config.train.grad_accum} micro-batches ({rows} rows) must split evenly over the {n} "
        f"devices")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir):
    with checkpoint.Checkpointer(ckpt_dir, max_to_keep=None, async_save=False) as ckpt:
      latest = ckpt.latest_step()
      meta = ckpt.restore_meta(latest) if latest is not None else None
    if meta is not None:
      state_lib.check_format(meta, workdir)
      check_resume(state_lib.upgrade_config(meta["config"]), config, workdir)
      kept = os.path.join(workdir, state_lib.QUANTIZER_DIR)
      if config.model_name == "discrete_lm" and os.path.isdir(kept):
        digest = lambda path: fileio.read_export(path, rvq.EXPORT_STEM)[1].get("weights_sha256")
        if digest(kept) != digest(config.quantizer.path):
          raise configlib.ConfigError(
              f"config.quantizer.path={config.quantizer.path}: its codebooks are not those the "
              f"checkpoint in {workdir} was trained with ({kept}); use a new --workdir")


def load_quantizer(config: ml_collections.ConfigDict,
                   stats: latents_lib.Stats) -> rvq.RVQ:
  """The discrete run's RVQ (`config.quantizer.path`), checked against the model's codebook
  shape and against the latents it will quantize; one line naming what does not match."""
  path = config.quantizer.path
  if not path:
    raise configlib.ConfigError("config.quantizer.path is empty: set it to the export directory "
                                "of `python -m almtok.quantizers.rvq` fitted on these latents")
  try:
    quantizer = rvq.RVQ.from_export(path, stats=stats)
  except (OSError, ValueError) as e:
    raise configlib.ConfigError(f"config.quantizer.path={path}: {e}") from None
  if config.quantizer.get("dim", quantizer.dim) != quantizer.dim:
    raise configlib.ConfigError(
        f"config.quantizer.dim={config.quantizer.dim}: the quantizer in {path} codes "
        f"{quantizer.dim}-channel latents")
  for key, want in (("num_codebooks", quantizer.n_q), ("codebook_size", quantizer.k)):
    if config.model[key] != want:
      raise configlib.ConfigError(
          f"config.model.{key}={config.model[key]}: the quantizer in {path} has "
          f"{'n_q' if key == 'num_codebooks' else 'k'}={want}")
  return quantizer


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds an exclusive lock on the workdir for as long as the run lives (the OS drops it when
  the process dies), so a second trainer on the same workdir is refused."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "train.lock")
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      raise WorkdirLockedError(f"workdir {workdir} is in use by another training process "
                               f"(pid {holder}); stop it or choose another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class _Preemption:
  """Turns SIGTERM into a flag that the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------------------------
# The training run.
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains until `train.num_steps` (or `train.max_minutes`, or SIGTERM); returns a summary."""
  from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top

  objective.check_config(config)
  check_run(config, workdir)
  is_main = jax.process_index() == 0
  lock = workdir_lock(workdir) if is_main else contextlib.nullcontext()
  with lock, _Preemption() as preemption:
    # --- Mesh ----------------------------------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    jax.set_mesh(mesh)
    logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(),
                 jax.process_count())

    # --- Input ---------------------------------------------------------------------------------
    global_batch = config.data.batch_size
    if global_batch % jax.process_count():
      raise configlib.ConfigError(f"config.data.batch_size={global_batch}: must divide over "
                                  f"{jax.process_count()} processes")
    local_batch = global_batch // jax.process_count()
    train_ds = pipeline.make_dataset(
        config.data.latents_dir, "train", seq_len=config.data.seq_len, batch_size=local_batch,
        seed=config.seed, shuffle=True, repeat=True, text_max_len=config.model.text_len,
        worker_count=config.data.worker_count)
    train_iter = iter(train_ds)
    text_encoder = TextEncoder(max_len=config.model.text_len)

    # --- Model and shardings -------------------------------------------------------------------
    tx = optim.make_optimizer(config.train)
    schedule = state_lib.make_schedule(config)
    stats = latents_lib.read_stats(config.data.latents_dir)
    quantizer = load_quantizer(config, stats) if config.model_name == "discrete_lm" else None
    graphdef, state_abstract, state_sh = state_lib.abstract_state(config, mesh, tx)
    repl = sharding.replicated(mesh)

    text_cache = TextEmbeddingCache(text_encoder, config.data.text_cache)

    def device_batch(batch) -> dict[str, Any]:
      text = text_cache.embed(batch["text_ids_BxN"], batch["text_mask_BxN"], batch["id"])
      return sharding.global_batch(
          {"x_BxLxC": batch["x_BxLxC"], "mask_BxL": batch["mask_BxL"], "text": text}, mesh)

    # --- Update --------------------------------------------------------------------------------
    run_objective = objective.make_objective(config, schedule, quantizer)
    train_step = jax.jit(objective.make_train_step(config, graphdef, tx, schedule, quantizer),
                         out_shardings=(state_sh, repl), donate_argnums=(0,))
    eval_step = jax.jit(objective.make_eval_step(config, graphdef, schedule, quantizer),
                        out_shardings=repl)

    # --- Checkpoint ----------------------------------------------------------------------------
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   max_to_keep=config.train.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is None:
      graphdef, state, _ = state_lib.init_state(config, mesh, tx)
      logging.info("initialised a new model")
    else:
      target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            state_abstract, state_sh)
      state, meta = state_lib.restore(ckpt, latest, target, workdir)
      train_iter.set_state(meta["data_iterator"])
      logging.info("resumed from step %d", latest)
    start_step = int(state["step"])

    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    if is_main:
      with fileio.atomic_write(os.path.join(workdir, "config.json")) as f:
        f.write(config.to_json_best_effort(indent=2))
      state_lib.write_run_files(workdir, config)
      if start_step == 0:
        writer.write_hparams({k: str(v) for k, v in configlib.leaves(config)})
    peak = flops.peak(config.dtype, config.train.peak_flops)
    logging.info("MFU divides by %.4g FLOP/s per device (%s)", peak.flops_per_s, peak.source)
    step_flops = flops.train_flops_per_step(config, graphdef, state_abstract["params"])
    report = periodic_actions.ReportProgress(num_train_steps=config.train.num_steps,
                                             writer=writer)

    def save(step: int) -> None:
      state_lib.save(ckpt, step, state, {"data_iterator": train_iter.get_state(),
                                         "config": json.loads(config.to_json())})

    # --- Evals ---------------------------------------------------------------------------------
    def evaluate(step: int) -> None:
      val_ds = pipeline.make_dataset(
          config.data.latents_dir, "validation", seq_len=config.data.seq_len,
          batch_size=local_batch, seed=0, shuffle=False, repeat=False,
          text_max_len=config.model.text_len, drop_remainder=False)
      # A split smaller than the batch still counts: its last batch is padded with rows that
      # hold no tokens. Each batch's means are weighted by what they average over, so the
      # result is the mean over all validation targets.
      weight_of = run_objective.metric_weights
      sums, totals = {}, {}
      for i, batch in enumerate(val_ds):
        if i >= config.train.eval_batches:
          break
        m, counts = jax.device_get(eval_step(state["ema"], device_batch(batch),
                                             jax.random.PRNGKey(i)))
        for k, v in m.items():
          if k != "loss":
            w = float(counts[weight_of.get(k, "examples")])
            sums[k] = sums.get(k, 0.0) + float(v) * w
            totals[k] = totals.get(k, 0.0) + w
      means = {k: sums[k] / totals[k] for k in sums if totals[k]}
      if "ntp_loss" in means:
        means["loss"] = run_objective.settings.total(means["ntp_loss"], means.get("mntp_loss", 0.0))
        writer.write_scalars(step, {f"val/{k}": v for k, v in means.items()})

    # --- Samples -------------------------------------------------------------------------------
    # Generated clips for a few fixed validation captions, with the EMA parameters.
    sampler = None
    if config.train.sample_every:
      audio_tokenizer = tokenizers.from_stats(stats)
      first = next(iter(pipeline.make_dataset(
          config.data.latents_dir, "validation", seq_len=config.data.seq_len,
          batch_size=config.train.sample_captions, shuffle=False, repeat=False,
          keep_captions=True, drop_remainder=False)))
      # Only real validation captions: a split smaller than sample_captions pads with empty ones.
      captions = [str(c) for c, v in zip(first["caption"], first["valid_B"]) if v]
      sample_text = text_encoder.encode_for_lm(captions)
      sampler = sample.make_sampler(nnx.merge(graphdef, state["ema"]),
                                    sample.settings_from_config(config), schedule=schedule,
                                    x0_range=latents_lib.data_range(stats), quantizer=quantizer)

    def write_samples(step: int) -> None:
      sampler.params = state["ema"]
      x = sampler.generate(sample_text, config.data.seq_len, jax.random.PRNGKey(config.seed),
                           progress=False)
      wavs = np.asarray(audio_tokenizer.decode(latents_lib.denormalize(x, stats)))
      rate = audio_tokenizer.sample_rate
      writer.write_audios(step, {f"samples/audio_{i}": w[None, :, None]
                                 for i, w in enumerate(wavs)},
                          sample_rate=rate)
      # Audio and images need tags of their own: TensorBoard files a tag under one plugin only.
      writer.write_images(step, {f"samples/spectrogram_{i}":
                                 plotting.spectrogram_image(w, rate, c)[None]
                                 for i, (w, c) in enumerate(zip(wavs, captions))})

    # --- Loop ----------------------------------------------------------------------------------
    rng = jax.random.PRNGKey(config.seed)
    deadline = (time.time() + 60 * config.train.max_minutes if config.train.max_minutes > 0
                else float("inf"))
    history: list[dict[str, float]] = []
    pending = None
    last_time, last_step = time.perf_counter(), start_step
    step = start_step

    def finish(pending_metrics) -> None:
      """Fetches a step's metrics (one step late, so the device never waits) and logs them."""
      nonlocal last_time, last_step
      done_step, m, dispatched = pending_metrics
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      m.pop("finite")
      optim.check_finite(done_step, m)
      history.append(dict(m, step=done_step))
      if ((config.train.log_every and done_step % config.train.log_every == 0)
          or done_step == config.train.num_steps):
        # Timed between dispatches, which are one loop iteration apart, not between fetches: a
        # checkpoint step fetches twice in a row, which would time the device step alone.
        steps_per_s = (done_step - last_step) / max(dispatched - last_time, 1e-9)
        last_time, last_step = dispatched, done_step
        m["tokens_per_s"] = steps_per_s * global_batch * config.data.seq_len
        m["model_flops_per_s_per_device"] = steps_per_s * step_flops / jax.device_count()
        m["mfu"] = m["model_flops_per_s_per_device"] / peak.flops_per_s
        writer.write_scalars(done_step, m)
        logging.info("step %d: %s", done_step, ", ".join(f"{k} {v:.4g}" for k, v in m.items()))

    try:
      while step < config.train.num_steps:
        batch = device_batch(next(train_iter))
        state, metrics = train_step(state, batch, rng)
        step += 1
        if pending is not None:
          finish(pending)
        pending = (step, metrics, time.perf_counter())
        report(step)
        out_of_time = time.time() > deadline
        if ((config.train.checkpoint_every and step % config.train.checkpoint_every == 0)
            or step == config.train.num_steps
            or preemption.requested or out_of_time):
          finish(pending)
          pending = None
          save(step)
        if config.train.eval_every and step % config.train.eval_every == 0:
          evaluate(step)
        if sampler is not None and step % config.train.sample_every == 0:
          write_samples(step)
        if preemption.requested or out_of_time:
          logging.warning("stopping at step %d (%s)", step,
                          "SIGTERM" if preemption.requested else "time budget")
          break
      if pending is not None:
        finish(pending)
    finally:
      # Whatever ends the loop (a non-finite step included), the saves it started must land:
      # at interpreter exit orbax can no longer finish them.
      ckpt.wait()
      writer.flush()
    return {"step": step, "history": history}


def main(argv):
  del argv
  f = flags.FLAGS
  objective.check_config(f.config)
  if not f.workdir:
    raise configlib.ConfigError("--workdir is required")
  if f.multihost:
    jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  logging.set_verbosity(logging.INFO)
  train_and_evaluate(f.config, f.workdir)


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
