r"""Trains the mel-VAE tokenizer and exports it for `tokenizers.get("mel_vae", path=...)`.

  python -m almtok.tokenizers.train_mel_vae --config=configs/mel_vae.py --workdir=/tmp/mel_vae
  python -m almtok.tokenizers.train_mel_vae --config=configs/mel_vae.py:tiny \
      --workdir=/tmp/mel_vae_tiny

Builds synth_sounds (and debian_sounds when `data.debian_prob` > 0) into `data_dir`, holds every
clip's log-mel in memory, and trains on random crops of `train.crop_frames` frames with the LM
trainer's AdamW and config keys (`optim.py`). Training stops at `train.num_steps` or when
`train.max_minutes` of training time (summed over restarts) are used up, whichever comes first;
the learning rate warms up linearly and then follows a cosine over progress = max(step /
num_steps, time used / time budget), so a time-limited run still anneals. A step whose loss or
gradient is not finite is not applied and stops the run (`optim.NonFiniteError`), as in the LM
trainer; the last checkpoint is kept. Writes TensorBoard scalars (loss, L1, KL, validation mel SNR)
and reconstruction images to <workdir>, orbax checkpoints to <workdir>/checkpoints (a rerun with
the same --workdir resumes), and finally <workdir>/mel_vae.safetensors + mel_vae.json.

The training batch is a pure function of (seed, step), so the step in the checkpoint is the
whole data-iterator state. The model is small: training runs on one device, without a mesh.

Shape letters: B batch, M mel bins, F frames.
"""

from __future__ import annotations

import functools
import json
import logging as std_logging
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

from almtok import audio
from almtok import checkpoint
from almtok import configlib
from almtok import fileio
from almtok import optim
from almtok.tokenizers import mel_vae
from almtok.tokenizers import melspec

def check_config(config: ml_collections.ConfigDict) -> None:
  """Range checks beyond `configlib.RULES`; raises `configlib.ConfigError` naming the key."""
  configlib.validate(config, choices={"synth.name": ("synth_sounds",),
                                      "debian.name": ("debian_sounds",)})
  down = 2 ** (len(config.model.channels) - 1)
  for key, value in (("train.crop_frames", config.train.crop_frames),
                     ("data.eval_frames", config.data.eval_frames)):
    if not isinstance(value, int) or value < down or value % down:
      raise configlib.ConfigError(f"config.{key}={value!r}: must be a positive multiple of the "
                                  f"model's down-sampling {down}")
  if not (isinstance(config.train.max_minutes, (int, float)) and config.train.max_minutes > 0):
    raise configlib.ConfigError(f"config.train.max_minutes={config.train.max_minutes!r}: must be "
                                "a number > 0")
  if not 0 <= config.train.final_lr_fraction <= 1:
    raise configlib.ConfigError(f"config.train.final_lr_fraction="
                                f"{config.train.final_lr_fraction!r}: must be in [0, 1]")
  if config.model.n_mels != audio.N_MELS:
    raise configlib.ConfigError(f"config.model.n_mels={config.model.n_mels}: the datasets' "
                                f"log-mel has {audio.N_MELS} bins")


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`MelVAE` keyword arguments (also what the export's JSON records)."""
  kwargs = config.model.to_dict()
  kwargs["channels"] = tuple(kwargs["channels"])
  return kwargs


# ---------------------------------------------------------------------------------------------
# Input.
# ---------------------------------------------------------------------------------------------


def clip_mels(source: Any) -> list[np.ndarray]:
  """The tokenizers' log-mel (S // hop frames, dB) of every clip in a TFDS data source."""
  mels = []
  for i in range(len(source)):
    wav_S = np.asarray(source[i]["audio"], np.float32)
    mel_MxF = audio.log_mel(wav_S)[:, :-1]   # Same as melspec.log_mel(..., drop_last=True).
    if mel_MxF.shape[1] > 0:
      mels.append(mel_MxF)
  return mels


def load_clips(config: ml_collections.ConfigDict,
               data_dir: str) -> dict[str, dict[str, list[np.ndarray]]]:
  """{source: {split: [mel M x F per clip]}} for the train and validation splits."""
  # Imports TensorFlow, so only here.
  from almtok.datasets import registry as datasets  # pylint: disable=g-import-not-at-top
  wanted = {"synth": config.synth}
  if config.data.debian_prob > 0:
    wanted["debian"] = config.debian
  clips = {}
  for name, dataset in wanted.items():
    sources = datasets.build(dataset, data_dir).as_data_source()
    clips[name] = {split: clip_mels(sources[split]) for split in ("train", "validation")}
    logging.info("%s: %s", name, {s: len(c) for s, c in clips[name].items()})
  return clips


def crop(mel_MxF: np.ndarray, frames: int, start: int) -> np.ndarray:
  """`frames` frames from `start`; a clip that ends early is padded with the -100 dB floor."""
  out_MxF = np.full((mel_MxF.shape[0], frames), melspec.FLOOR_DB, np.float32)
  piece = mel_MxF[:, start:start + frames]
  out_MxF[:, :piece.shape[1]] = piece
  return out_MxF


def sample_batch(clips: dict[str, list[np.ndarray]], step: int, *, seed: int, batch_size: int,
                 crop_frames: int, debian_prob: float) -> np.ndarray:
  """Training mels [B, M, crop_frames] for `step`: a pure function of (seed, step).

  Each example picks debian_sounds with probability `debian_prob` (when present), a clip
  uniformly, and a crop start uniformly among those that stay inside the clip.
  """
  rng = np.random.default_rng([seed, step])
  batch = []
  for _ in range(batch_size):
    use_debian = "debian" in clips and rng.random() < debian_prob
    pool = clips["debian" if use_debian else "synth"]
    mel_MxF = pool[rng.integers(len(pool))]
    start = int(rng.integers(max(1, mel_MxF.shape[1] - crop_frames + 1)))
    batch.append(crop(mel_MxF, crop_frames, start))
  return np.stack(batch)


def eval_batches(clips: dict[str, dict[str, list[np.ndarray]]], num_clips: int,
                 frames: int) -> dict[str, np.ndarray]:
  """{source: [B, M, frames]}: the start of the first `num_clips` validation clips."""
  return {name: np.stack([crop(m, frames, 0) for m in splits["validation"][:num_clips]])
          for name, splits in clips.items() if splits["validation"]}


# ---------------------------------------------------------------------------------------------
# Model and update.
# ---------------------------------------------------------------------------------------------


# The optimiser and the jitted steps are built once per process for given settings, so that a
# second run in the same process (a resumed run in a notebook or a test) reuses the compiled
# code. Settings that do not enter the step (num_steps, the time budget, ...) are not part of
# the key.
_STEP_KEYS = ("kl_weight", "learning_rate", "warmup_steps", "final_lr_fraction")
_OPTIMIZER_KEYS = ("learning_rate", "weight_decay", "b1", "b2", "grad_clip")


def _frozen(train: ml_collections.ConfigDict,
            keys: tuple[str, ...]) -> ml_collections.FrozenConfigDict:
  return ml_collections.FrozenConfigDict({k: train[k] for k in keys})


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`optim.make_optimizer` with the learning rate as a hyperparameter that the train step sets
  from the batch's progress (`optim.budget_learning_rate`)."""
  return _optimizer(_frozen(train, _OPTIMIZER_KEYS))


@functools.lru_cache(maxsize=8)
def _optimizer(settings: ml_collections.FrozenConfigDict) -> optax.GradientTransformation:
  return optim.make_optimizer(settings, injected_lr=True)


def init_state(config: ml_collections.ConfigDict, tx: optax.GradientTransformation, *,
               abstract: bool = False) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """(graphdef, state) with state = {step, params (pure dict), opt_state}, built in one jit.

  With `abstract`, the state holds `jax.ShapeDtypeStruct`s (nothing is computed or compiled):
  the target for restoring a checkpoint.
  """
  kwargs = model_kwargs(config)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: mel_vae.MelVAE(**kwargs, rngs=nnx.Rngs(0))))

  def init(key):
    params = nnx.to_pure_dict(nnx.state(mel_vae.MelVAE(**kwargs, rngs=nnx.Rngs(key))))
    return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  # An "rbg" key: threefry initialisers compile slowly on XLA:CPU (see `mel_vae.init`).
  key = jax.random.key(config.seed, impl="rbg")
  if abstract:
    return graphdef, jax.eval_shape(init, key)
  # Placed explicitly (committed), like a restored state, so both run the same compiled step.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return graphdef, jax.jit(init, out_shardings=device)(key)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    train: ml_collections.ConfigDict):
  """The jitted `(state, batch, rng) -> (state, metrics)`; `state` is donated.

  `batch` holds `mel` [B, M, F] in dB and `progress` (a float32 scalar in [0, 1]).
  """
  return _train_step(graphdef, tx, _frozen(train, _STEP_KEYS))


@functools.lru_cache(maxsize=8)
def _train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                train: ml_collections.FrozenConfigDict):

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state["step"])

    def loss_of(params):
      return mel_vae.loss_fn(nnx.merge(graphdef, params), batch["mel"], rng, train.kl_weight)

    (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
    lr = optim.budget_learning_rate(train, state["step"], batch["progress"])
    opt_state = optim.set_learning_rate(state["opt_state"], lr)
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.tree.norm(grads)
    new = dict(step=state["step"] + 1, params=params, opt_state=opt_state)
    new, finite = optim.keep_if_finite(new, state, metrics["loss"], grad_norm)
    metrics.update(grad_norm=grad_norm, learning_rate=lr, finite=finite.astype(jnp.float32))
    return new, metrics

  return jax.jit(train_step, donate_argnums=0)


@functools.lru_cache(maxsize=8)
def make_eval_step(graphdef: nnx.GraphDef):
  """Jitted `(params, mel_BxMxF) -> (recon_BxMxF, mel SNR [B], L1 dB [B])`, posterior mean."""

  def eval_step(params, mel_BxMxF):
    model = nnx.merge(graphdef, params)
    recon_BxMxF = model.decode(model.encode(mel_BxMxF))
    l1_B = jnp.mean(jnp.abs(recon_BxMxF - mel_BxMxF), axis=(1, 2))
    return recon_BxMxF, melspec.mel_snr_db(mel_BxMxF, recon_BxMxF), l1_B

  return jax.jit(eval_step)


def comparison_image(mel_MxF: np.ndarray, recon_MxF: np.ndarray) -> np.ndarray:
  """[1, 2M + 2, F, 1] in [0, 1]: the original above the reconstruction, low bins at the bottom,
  an 80 dB range below the clip's peak."""
  top = float(mel_MxF.max())
  gap_2xF = np.ones((2, mel_MxF.shape[1]), np.float32)
  rows = [np.clip((m[::-1] - (top - 80.0)) / 80.0, 0.0, 1.0) for m in (mel_MxF, recon_MxF)]
  return np.concatenate([rows[0], gap_2xF, rows[1]], axis=0)[None, :, :, None]


# ---------------------------------------------------------------------------------------------
# Loop.
# ---------------------------------------------------------------------------------------------


def train_and_export(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` when it holds a checkpoint), exports, returns a summary."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  check_config(config)
  tc = config.train
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  # --- Input --------------------------------------------------------------------------------
  data_dir = config.data_dir or os.path.join(workdir, "tfds")
  clips = load_clips(config, data_dir)
  train_clips = {name: splits["train"] for name, splits in clips.items()}
  evals = eval_batches(clips, config.data.num_eval_clips, config.data.eval_frames)

  # --- Model and update ---------------------------------------------------------------------
  tx = make_optimizer(tc)
  graphdef, abstract_state = init_state(config, tx, abstract=True)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state["params"]))
  train_step = make_train_step(graphdef, tx, tc)
  eval_step = make_eval_step(graphdef)

  # --- Checkpoint: resume from the newest step, or start afresh -----------------------------
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
  train_seconds = 0.0
  start_step = ckpt.latest_step()
  if start_step is not None:
    state, meta, _ = ckpt.restore(start_step, abstract_state)
    train_seconds = float(meta.get("train_seconds", 0.0))
    logging.info("resumed from step %d (%.0f s of training)", start_step, train_seconds)
  else:
    _, state = init_state(config, tx)
  step = int(state["step"])
  budget_s = 60.0 * tc.max_minutes

  # --- Writers ------------------------------------------------------------------------------
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  if step == 0:
    writer.write_scalars(0, {"num_params": num_params})
  report = periodic_actions.ReportProgress(num_train_steps=tc.num_steps, writer=writer)

  last_eval = {}   # {step: (scalars, with_images)} of the latest evaluation.

  def evaluate(at_step: int, with_images: bool) -> dict[str, float]:
    scalars = {}
    for name, mel_BxMxF in evals.items():
      recon_BxMxF, snr_B, l1_B = jax.device_get(eval_step(state["params"], mel_BxMxF))
      scalars[f"eval/{name}_mel_snr_db"] = float(np.mean(snr_B))
      scalars[f"eval/{name}_l1_db"] = float(np.mean(l1_B))
      if with_images:
        writer.write_images(at_step, {f"recon/{name}": comparison_image(mel_BxMxF[0],
                                                                         recon_BxMxF[0])})
    writer.write_scalars(at_step, scalars)
    last_eval.clear()
    last_eval[at_step] = (scalars, with_images)
    return scalars

  def save(at_step: int) -> None:
    ckpt.save(at_step, state, dict(step=at_step, train_seconds=train_seconds,
                                   config=config.to_dict()))

  # --- Loop ---------------------------------------------------------------------------------
  # "rbg": with threefry, the train step's one normal draw costs seconds of XLA:CPU compilation.
  rng = jax.random.key(config.seed, impl="rbg")
  pending = None    # (step, metrics) of the last step, fetched after the next one is queued.

  def finish(done_step: int, metrics: dict[str, jax.Array]) -> None:
    """Stops at a non-finite step (its update was not applied); logs the step if it is due."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    values.pop("finite")
    optim.check_finite(done_step, values)
    if tc.log_every and (done_step % tc.log_every == 0 or done_step == 1):
      writer.write_scalars(done_step, {f"train/{k}": v for k, v in values.items()})

  # Training time counts everything in the loop (compilation, evaluation, checkpoints).
  resumed_seconds, loop_start = train_seconds, time.monotonic()
  try:
    while step < tc.num_steps and train_seconds < budget_s:
      progress = max(step / tc.num_steps, train_seconds / budget_s)
      mel_BxMxF = sample_batch(train_clips, step, seed=config.seed, batch_size=tc.batch_size,
                               crop_frames=tc.crop_frames, debian_prob=config.data.debian_prob)
      batch = dict(mel=mel_BxMxF, progress=np.float32(progress))
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_step(state, batch, rng)
      step += 1
      if pending is not None:
        finish(*pending)
      pending = (step, metrics)
      report(step)
      if tc.eval_every and step % tc.eval_every == 0:
        evaluate(step, with_images=bool(tc.image_every) and step % tc.image_every == 0)
      train_seconds = resumed_seconds + time.monotonic() - loop_start
      if tc.checkpoint_every and step % tc.checkpoint_every == 0:
        finish(*pending)   # Never save the state of a run that has already gone bad.
        pending = None
        save(step)
    if pending is not None:
      finish(*pending)
  except optim.NonFiniteError:
    ckpt.wait()   # The saves already started must land: orbax cannot finish them at exit.
    raise

  # --- Final evaluation, checkpoint and export ----------------------------------------------
  # The loop may have just evaluated this step; the final evaluation always has images.
  final, had_images = last_eval.get(step, ({}, False))
  if not had_images:
    final = evaluate(step, with_images=True)
  save(step)
  ckpt.wait()
  ckpt.close()
  summary = dict(step=step, train_seconds=train_seconds, num_params=num_params,
                 **{k: round(v, 3) for k, v in final.items()})
  if is_main:
    model = nnx.merge(graphdef, state["params"])
    weights, meta = mel_vae.export(model, model_kwargs(config), workdir, extra=dict(
        trained_steps=step, train_seconds=train_seconds,
        kl_weight=tc.kl_weight, eval=summary))
    summary.update(weights=weights, meta=meta)
    fileio.atomic_json(os.path.join(workdir, "train_summary.json"), summary, indent=2)
  writer.flush()
  writer.close()
  return summary


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's INFO lines (dozens per checkpoint); its warnings and errors still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  config = flags.FLAGS.config
  check_config(config)
  if not flags.FLAGS.workdir:
    raise configlib.ConfigError("--workdir is required")
  summary = train_and_export(config, flags.FLAGS.workdir)
  print(json.dumps(summary, indent=2))


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  config_flags.DEFINE_config_file("config", None, "Tokenizer training config file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumes from it).")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
