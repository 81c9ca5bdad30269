"""Every bad training input the README promises to catch stops the run with one line naming the
input, before any work and before the workdir is touched.

One table: each row is a set of `--config.*` overrides, what the message must start with, and
which workdir it starts from (a fresh one, or a copy of a trained one). The rows run in-process
through `train.train_and_evaluate`, which is what `main` calls; `tests/test_train.py` checks that
the program prints such an error as one line.
"""

import os
import shutil

import numpy as np
import pytest

from almtok import configlib
from almtok import train
from configs import synth_small

# The config the suite's tiny trained run (`tiny_lm` in conftest.py) was trained with.
TINY = dict(arg="size=tiny,steps=20,batch=8",
            overrides={"data.seq_len": 25, "train.log_every": 10, "train.checkpoint_every": 20,
                       "train.eval_every": 20, "train.sample_every": 20, "train.sample_steps": 2,
                       "train.sample_captions": 6})

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
    ({"train.sample_steps": 0}, "config.train.sample_steps=0: must be an integer >= 1", False),
    ({"train.num_steps": 0}, "config.train.num_steps=0: must be an integer >= 1", False),
    ({"diffusion.num_steps": 0}, "config.diffusion.num_steps=0: must be an integer >= 1", False),
    ({"diffusion.batch_mul": 0}, "config.diffusion.batch_mul=0: must be an integer >= 1", False),
    ({"loss.mntp_weight": 0.5}, "config.loss.mntp_weight=0.5: the checkpoint in", True),
    ({"model.decoder.num_layers": 3}, "config.model.decoder.num_layers=3: the checkpoint in",
     True),
    ({"diffusion.prediction": "eps"}, "config.diffusion.prediction='eps': the checkpoint in",
     True),
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
  config = synth_small.get_config(TINY["arg"])
  config.update_from_flattened_dict(dict(TINY["overrides"], **{"data.latents_dir": latents_dir}))
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.parametrize("overrides,expected,resume", ROWS,
                         ids=[",".join(f"{k}={v}" for k, v in r[0].items()) for r in ROWS])
def test_bad_input_stops_in_one_line_and_writes_nothing(tiny_latents, tiny_lm, tmp_path,
                                                        overrides, expected, resume):
  if overrides.get("data.latents_dir") == "EMPTY":
    overrides = {"data.latents_dir": str(tmp_path / "empty")}
    os.makedirs(overrides["data.latents_dir"])
  workdir = str(tmp_path / "lm")
  if resume:
    shutil.copytree(tiny_lm, workdir)
  before = _tree(workdir) if resume else None
  with pytest.raises(configlib.ConfigError) as e:
    train.train_and_evaluate(_config(tiny_latents, overrides), workdir)
  message = str(e.value)
  assert message.startswith(expected) and "\n" not in message, message
  if resume:
    assert _tree(workdir) == before
  else:
    assert not os.path.exists(workdir)


def test_resume_may_change_budgets_and_layout(tiny_latents, tiny_lm):
  # Steps, logging, evaluation, sampling and accumulation are listed as free to change.
  train.check_run(_config(tiny_latents, {"train.num_steps": 40, "train.log_every": 1,
                                         "train.grad_accum": 2, "train.sample_every": 5}),
                  tiny_lm)


def test_a_split_smaller_than_the_batch_is_evaluated_and_sampled(tiny_lm):
  """The tiny run's batch (8) is larger than its validation split (4 clips), and it asks for 6
  sample captions: the last step's validation loss covers the 4 clips, and it samples 4 clips,
  none from an empty padding caption."""
  from almtok import events  # pylint: disable=g-import-not-at-top
  ev = events.read_events(tiny_lm)
  assert [step for step, _ in ev.values["val/loss"]] == [20]
  (_, val_loss), = ev.values["val/loss"]
  assert np.isfinite(float(val_loss)) and float(val_loss) > 0
  audio_tags = sorted(t for t, p in ev.plugins.items() if p == "audio")
  assert audio_tags == [f"samples/audio_{i}" for i in range(4)], audio_tags
