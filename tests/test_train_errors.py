"""Every bad training input the README promises to catch stops the run with one line naming the
input, before any work and before the workdir is touched.

One table: each row is a set of `--config.*` overrides, what the message must start with, and
which workdir it starts from (a fresh one, or a copy of a trained one). The rows run in-process
through `train.train_and_evaluate`, which is what `main` calls; `tests/test_train.py` checks that
the program prints such an error as one line.
"""

import json
import os
import shutil

import numpy as np
import pytest

from almtok import configlib
from almtok import objective
from almtok import state as state_lib
from almtok import train
from tests.tiny import tiny_lm_config

ROWS = [
    # (overrides, the message starts with, resume from the trained workdir)
    ({"data.latents_dir": ""}, "config.data.latents_dir is empty", False),
    ({"data.latents_dir": "/nonexistent/latents"},
     "config.data.latents_dir=/nonexistent/latents: no such directory", False),
    ({"data.latents_dir": "EMPTY"}, "config.data.latents_dir=", False),
    ({"train.ema_decay": 1.0}, "config.train.ema_decay=1.0: must be in [0, 1)", False),
    ({"train.grad_accum": 0}, "config.train.grad_accum=0: must be an integer >= 1", False),
    ({"train.grad_accum": 3}, "config.train.grad_accum=3: must divide data.batch_size=8", False),
    ({"mesh.data": 3}, "config.mesh: mesh data=3 x fsdp=1 does not match the 1 devices", False),
    ({"sample.solver_steps": 0}, "config.sample.solver_steps=0: must be an integer >= 1", False),
    ({"train.num_steps": 0}, "config.train.num_steps=0: must be an integer >= 1", False),
    ({"diffusion.timesteps": 0}, "config.diffusion.timesteps=0: must be an integer >= 1", False),
    ({"diffusion.batch_mul": 0}, "config.diffusion.batch_mul=0: must be an integer >= 1", False),
    ({"loss.mntp_weight": 0.5}, "config.loss.mntp_weight=0.5: the checkpoint in", True),
    ({"model.decoder.num_layers": 3}, "config.model.decoder.num_layers=3: the checkpoint in",
     True),
    ({"diffusion.prediction": "eps"}, "config.diffusion.prediction='eps': the checkpoint in",
     True),
    ({"data.latents_dir": "NO_VALIDATION"}, "config.data.latents_dir=", False),
    ({"model.token_dim": 64}, "config.model.token_dim=64: the latents in", False),
]


def _tree(path: str) -> dict[str, float]:
  """Every file and folder under `path` with its modification time (nothing written = equal)."""
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      p = os.path.join(root, name)
      out[os.path.relpath(p, path)] = os.stat(p).st_mtime_ns
  return out


def _config(latents_dir: str, overrides: dict):
  return tiny_lm_config(latents_dir, **overrides)


@pytest.mark.parametrize("overrides,expected,resume", ROWS,
                         ids=[",".join(f"{k}={v}" for k, v in r[0].items()) for r in ROWS])
def test_bad_input_stops_in_one_line_and_writes_nothing(tiny_latents, tiny_lm, tmp_path,
                                                        overrides, expected, resume):
  if overrides.get("data.latents_dir") == "EMPTY":
    overrides = {"data.latents_dir": str(tmp_path / "empty")}
    os.makedirs(overrides["data.latents_dir"])
  if overrides.get("data.latents_dir") == "NO_VALIDATION":
    # The tiny latents with an empty validation split, while the run evaluates and samples.
    overrides = {"data.latents_dir": str(tmp_path / "no_val")}
    shutil.copytree(tiny_latents, overrides["data.latents_dir"])
    stats_path = os.path.join(overrides["data.latents_dir"], "stats.json")
    with open(stats_path) as f:
      stats = json.load(f)
    for shard in stats["splits"]["validation"]["shards"]:
      shard["records"] = 0
    with open(stats_path, "w") as f:
      json.dump(stats, f)
    expected += overrides["data.latents_dir"] + ": its validation split holds no records"
  workdir = str(tmp_path / "lm")
  if resume:
    shutil.copytree(tiny_lm, workdir)
  before = _tree(workdir) if resume else None
  with pytest.raises(configlib.ConfigError) as e:
    train.train_and_evaluate(_config(tiny_latents, overrides), workdir)
  message = str(e.value)
  assert message.startswith(expected) and "\n" not in message, message
  if overrides.get("data.latents_dir", "").endswith("empty"):
    assert message.endswith("stats.json is missing: run `python -m almtok.prepare` to "
                            "completion for this workdir first"), message
  if resume:
    assert _tree(workdir) == before
  else:
    assert not os.path.exists(workdir)


def test_resume_may_change_budgets_and_layout(tiny_latents, tiny_lm):
  # Steps, logging, evaluation, sampling and accumulation are listed as free to change.
  train.check_run(_config(tiny_latents, {"train.num_steps": 40, "train.log_every": 1,
                                         "train.grad_accum": 2, "train.sample_every": 5}),
                  tiny_lm)


def test_a_split_smaller_than_the_batch_is_evaluated_and_sampled(tiny_lm, tiny_latents):
  """The tiny run's batch (8) is larger than its validation split (4 clips), and it asks for 6
  sample captions: the last step's validation loss is that of the 4 clips in one unpadded batch,
  and it samples 4 clips, none from an empty padding caption."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from almtok import events  # pylint: disable=g-import-not-at-top
  from almtok.latents import pipeline  # pylint: disable=g-import-not-at-top
  from almtok.text.cache import TextEmbeddingCache  # pylint: disable=g-import-not-at-top
  from almtok.text.minilm import TextEncoder  # pylint: disable=g-import-not-at-top

  ev = events.read_events(tiny_lm)
  assert [step for step, _ in ev.values["val/loss"]] == [20]
  logged = {tag[len("val/"):]: float(pairs[0][1]) for tag, pairs in ev.values.items()
            if tag.startswith("val/")}
  audio_tags = sorted(t for t, p in ev.plugins.items() if p == "audio")
  assert audio_tags == [f"samples/audio_{i}" for i in range(4)], audio_tags

  config = tiny_lm_config(tiny_latents)
  graphdef, ema = nnx.split(state_lib.load_model(tiny_lm, config), nnx.Param)
  batch = next(iter(pipeline.make_dataset(
      tiny_latents, "validation", seq_len=config.data.seq_len, batch_size=4, shuffle=False,
      repeat=False, text_max_len=config.model.text_len, drop_remainder=False)))
  assert np.all(batch["valid_B"])
  text = TextEmbeddingCache(TextEncoder(max_len=config.model.text_len), 8).embed(
      batch["text_ids_BxN"], batch["text_mask_BxN"], batch["id"])
  step = jax.jit(objective.make_eval_step(config, graphdef, state_lib.make_schedule(config)))
  want, _ = jax.device_get(step(ema, {"x_BxLxC": batch["x_BxLxC"],
                                      "mask_BxL": batch["mask_BxL"], "text": text},
                                jax.random.PRNGKey(0)))
  for name in ("loss", "ntp_loss", "mntp_loss", "mntp_kept_frac"):
    np.testing.assert_allclose(logged[name], float(want[name]), rtol=1e-5, err_msg=name)
