"""Shared pytest set-up: strict numerics and a parsed absl flag state."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from absl import flags  # noqa: E402

# Implicit rank promotion hides shape bugs; tests must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Grain workers and absl-based code expect parsed flags.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory):
  """Mel latents of a tiny synthetic set (16/4/4 clips of 1 s), prepared once per session."""
  from almtok import prepare  # pylint: disable=g-import-not-at-top
  from configs import prepare as prepare_config  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("prep"))
  prepare.prepare(prepare_config.get_config("synth_sounds,size=tiny,seconds=1.0"), workdir)
  return f"{workdir}/latents"


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, tiny_latents):
  """A training workdir of the tiny LM trained 20 steps on `tiny_latents` (in-process)."""
  from almtok import train  # pylint: disable=g-import-not-at-top
  from configs import synth_small  # pylint: disable=g-import-not-at-top
  config = synth_small.get_config("size=tiny,steps=20,batch=4")
  config.unlock()
  config.data.latents_dir = tiny_latents
  config.data.seq_len = 25
  config.train.update(log_every=10, checkpoint_every=20, eval_every=0)
  config.lock()
  workdir = str(tmp_path_factory.mktemp("lm"))
  train.train_and_evaluate(config, workdir)
  return workdir
