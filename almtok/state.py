"""A run's train state: its layout, its sharded creation, its checkpoints, and loading a model.

The train state is a dict `{"step", "params", "opt_state", "ema"}` of (sharded) arrays; the
model's structure is the `graphdef` that `abstract_state` returns beside it. A checkpoint holds
it as two array items, `state` (step, params, optimizer state) and `ema` (the EMA weights, which
generation reads alone), plus JSON metadata that names the checkpoint `FORMAT`. The trainer
creates and checkpoints the state; generation, the notebook and the benchmarks load through
here, so none of them imports the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

import orbax.checkpoint as ocp

from almtok import checkpoint
from almtok import configlib
from almtok import diffusion
from almtok import fileio
from almtok import models
from almtok import optim
from almtok import sharding
from almtok import tokenizers
from almtok.latents import store as latents_lib
from almtok.quantizers import rvq


# The layout of a run's checkpoints; a reader refuses any other in one line (no silent misload).
# 1: the EMA inside the `state` item; 2: the EMA as its own item.
FORMAT = "almtok-run-2"
UNVERSIONED = "almtok-run-1"   # What a run that names no format was written as.

# Config keys renamed since runs were first written: (old dotted key, new dotted key). A stored
# config is read through `upgrade_config`, so that older runs still load and resume.
RENAMED_KEYS = (
    ("sample.steps", "sample.solver_steps"),
    ("sample.sampler", "sample.solver"),
    ("diffusion.num_steps", "diffusion.timesteps"),
)


def upgrade_config(raw: dict[str, Any]) -> dict[str, Any]:
  """A stored config (its JSON dict) with `RENAMED_KEYS` under their current names."""
  raw = json.loads(json.dumps(raw))
  for old, new in RENAMED_KEYS:
    *parents, old_leaf = old.split(".")
    block = raw
    for key in parents:
      block = block.get(key) if isinstance(block, dict) else None
    if isinstance(block, dict) and old_leaf in block:
      block[new.rsplit(".", 1)[1]] = block.pop(old_leaf)
  return raw


def check_format(meta: dict, where: str) -> None:
  """Raises a one-line ConfigError unless the checkpoint metadata `meta` is of `FORMAT`."""
  found = meta.get("format", UNVERSIONED)
  if found != FORMAT:
    raise configlib.ConfigError(f"{where}: its checkpoints are in format {found}; this almtok "
                                f"reads {FORMAT} (train it again with this almtok)")


def save(ckpt: checkpoint.Checkpointer, step: int, state: dict, meta: dict) -> bool:
  """Starts saving the train state as `step`: the EMA weights as their own item."""
  rest = {k: v for k, v in state.items() if k != "ema"}
  return ckpt.save(step, rest, dict(meta, format=FORMAT),
                   extra_args={"ema": ocp.args.StandardSave(state["ema"])})


def restore(ckpt: checkpoint.Checkpointer, step: int, target: dict,
            where: str) -> tuple[dict, dict]:
  """(train state, metadata) of `step`, into `target`'s shapes and shardings."""
  check_format(ckpt.restore_meta(step), where)
  rest = {k: v for k, v in target.items() if k != "ema"}
  state, meta, extras = ckpt.restore(step, rest, extra_args={
      "ema": ocp.args.StandardRestore(checkpoint.abstract_like(target["ema"]))})
  return dict(state, ema=extras["ema"]), meta


# What a workdir holds beside its checkpoints so that generation needs nothing else: the
# prepared latents' stats.json (tokenizer spec, normalizer, per-channel range), a copy of the
# tokenizer's weights when it has any, a copy of the discrete baseline's RVQ, and `RUN_FILE`
# (format, text encoder, where the data was).
STATS_FILE = "latents_stats.json"
TOKENIZER_DIR = "tokenizer"
QUANTIZER_DIR = "quantizer"   # The discrete baseline's RVQ export, copied.
RUN_FILE = "run.json"


def write_run_files(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Makes `workdir` stand on its own for generation (each file whole or not at all)."""
  where = os.path.abspath(config.data.latents_dir)
  with open(os.path.join(where, latents_lib.STATS_FILE), "rb") as f:
    raw = f.read()
  stats = latents_lib.Stats.from_json(json.loads(raw), where)
  tok = stats.tokenizer
  params = tokenizers.copy_weights(tok.name, tok.params, os.path.join(workdir, TOKENIZER_DIR))
  if params.get("path"):  # Named relative to the workdir, so that the workdir can move.
    params["path"] = TOKENIZER_DIR
  stats = stats.replace(tokenizer=dataclasses.replace(tok, params=params))
  fileio.atomic_json(os.path.join(workdir, STATS_FILE), stats.to_json(), indent=1)
  if config.model_name == "discrete_lm":
    weights, meta, _ = fileio.read_export(config.quantizer.path, rvq.EXPORT_STEM)
    fileio.write_export(os.path.join(workdir, QUANTIZER_DIR), rvq.EXPORT_STEM, weights, meta,
                        indent=1, ensure_ascii=False)
  fileio.atomic_json(os.path.join(workdir, RUN_FILE), {
      "format": FORMAT,
      "text_encoder": {"name": "minilm-l6", "max_len": config.model.text_len},
      "latents_dir": where,
      "latents_stats_sha256": hashlib.sha256(raw).hexdigest()}, indent=1)


def run_stats(workdir: str) -> latents_lib.Stats:
  """The latents' stats.json as the run recorded it, with a tokenizer path made absolute."""
  path = os.path.join(workdir, STATS_FILE)
  if not os.path.exists(path):
    raise configlib.ConfigError(f"{workdir}: no {STATS_FILE} (a workdir from an older almtok); "
                                f"train it again with this almtok")
  stats = latents_lib.read_stats_file(path)
  params = dict(stats.tokenizer.params)
  if params.get("path") and not os.path.isabs(params["path"]):
    params["path"] = os.path.join(workdir, params["path"])
  return stats.replace(tokenizer=dataclasses.replace(stats.tokenizer, params=params))


def load_run_config(workdir: str) -> dict[str, Any]:
  """The training config stored with the checkpoints (without loading any arrays)."""
  if not workdir or not os.path.isdir(workdir):
    raise configlib.ConfigError(f"--workdir={workdir}: no such directory")
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  if not os.path.exists(path) or not steps:
    raise configlib.ConfigError(f"--workdir={workdir}: no finished checkpoint (train first)")
  run_file = os.path.join(workdir, RUN_FILE)
  found = UNVERSIONED
  if os.path.exists(run_file):
    with open(run_file, encoding="utf-8") as f:
      found = json.load(f).get("format", found)
  if found != FORMAT:
    raise configlib.ConfigError(f"--workdir={workdir}: a run in format {found}; this almtok "
                                f"reads {FORMAT} (train it again with this almtok)")
  with open(path) as f:
    return upgrade_config(json.load(f))


def run_quantizer(workdir: str) -> rvq.RVQ:
  """The discrete run's own copy of its RVQ, checked against the latents it was fitted on."""
  return rvq.RVQ.from_export(os.path.join(workdir, QUANTIZER_DIR), stats=run_stats(workdir))


def run_latents_dir(workdir: str) -> str:
  """The prepared latents the run was trained on, checked to be there and unchanged."""
  with open(os.path.join(workdir, RUN_FILE), encoding="utf-8") as f:
    run = json.load(f)
  where = run["latents_dir"]
  stats_path = os.path.join(where, latents_lib.STATS_FILE)
  if not os.path.exists(stats_path):
    raise configlib.ConfigError(f"{workdir} was trained on the latents in {where}, which are "
                                f"gone; this needs them (generating from captions does not)")
  with open(stats_path, "rb") as f:
    if hashlib.sha256(f.read()).hexdigest() != run["latents_stats_sha256"]:
      raise configlib.ConfigError(f"{workdir} was trained on the latents in {where}, which "
                                  f"have changed since (their stats.json differs)")
  return where


def make_schedule(config: ml_collections.ConfigDict) -> diffusion.Schedule | None:
  """The head's training noise schedule (`config.diffusion`); None for the discrete baseline."""
  if config.model_name == "discrete_lm":
    return None
  make = {"cosine": diffusion.cosine_schedule, "linear": diffusion.linear_schedule}
  return make[config.diffusion.schedule](config.diffusion.timesteps)


def abstract_state(config, mesh, tx):
  """The train state's graphdef, shapes and shardings, without allocating anything."""
  model = models.abstract(config)
  graphdef, params = nnx.split(model, nnx.Param)
  opt_state = jax.eval_shape(tx.init, params)
  state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params,
           "opt_state": opt_state, "ema": params}
  # A run from before the rules were config data was laid out by the defaults.
  rules = config.get("sharding_rules") or sharding.PARAM_RULES
  shardings = sharding.param_shardings(state, mesh, rules)
  return graphdef, state, shardings


def init_state(config, mesh, tx):
  """Creates the train state directly in its shardings: eval_shape, then a jitted init."""
  graphdef, abstract, shardings = abstract_state(config, mesh, tx)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init():
    params = nnx.state(models.build(config, nnx.Rngs(config.seed)), nnx.Param)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "ema": jax.tree.map(jnp.copy, params)}

  del abstract
  return graphdef, init(), shardings


def load_model(workdir: str, config: ml_collections.ConfigDict, use_ema: bool = True,
               step: int | None = None) -> nnx.Module:
  """The model of a training workdir's newest (or given) checkpoint, EMA weights by default."""
  tx = optim.make_optimizer(config.train)
  mesh = sharding.make_mesh(-1, 1)
  graphdef, abstract, shardings = abstract_state(config, mesh, tx)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None,
                               async_save=False) as ckpt:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint")
    check_format(ckpt.restore_meta(step), workdir)
    if use_ema:  # The EMA item alone: no optimizer state is read.
      return nnx.merge(graphdef, ckpt.restore_item(step, "ema", target["ema"]))
    state, _ = restore(ckpt, step, target, workdir)
  return nnx.merge(graphdef, state["params"])


