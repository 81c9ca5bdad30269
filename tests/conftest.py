"""Shared pytest set-up: strict numerics, a parsed absl flag state, one JAX compilation cache,
and the tiny dataset and trained run that several test files use, built once per session.

`make test` runs the suite on two pytest-xdist workers. The tiny dataset and run are built by
whichever worker asks first, under a file lock in the session's shared temporary directory; the
other worker waits and reuses them. The compilation cache is shared by both workers and by the
trainer subprocesses that the tests start, so a program compiled once is reused everywhere.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A directory per checkout; XLA keys its entries by program and version, so it never goes stale.
JAX_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
                 "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
from absl import flags  # noqa: E402

# Implicit rank promotion hides shape bugs; tests must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Grain workers and absl-based code expect parsed flags.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


import filelock  # noqa: E402
import pytest  # noqa: E402

# The test files that take longest, longest first (seconds of test time on a fresh clone, 2-core
# machine): `make test` hands files to its two workers in this order, then the rest in name order,
# so that no long file starts last while the other worker has nothing left (longest first keeps
# the two workers' totals close). `make test-durations` shows the current figures.
SLOW_FILES = (
    "test_plan.py", "test_train_distributed.py", "test_train.py", "test_tagger.py",
    "test_discrete_lm.py", "test_continuous_lm.py", "test_generate.py", "test_train_step.py",
    "test_notebook.py", "test_sample.py", "test_mel_vae.py", "test_train_errors.py",
    "test_text.py", "test_configs.py", "test_denoiser.py", "test_diffusion.py",
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: (rank.get(item.path.name, len(SLOW_FILES)), item.path.name))


def _shared_dir(tmp_path_factory, name: str):
  """A directory that every xdist worker of this session sees (the session's own without
  xdist), and the lock that guards building it."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  return base / name, filelock.FileLock(str(base / f"{name}.lock"))


@pytest.fixture(scope="session")
def jax_cache() -> str:
  """The compilation cache directory, for the subprocesses that tests start."""
  os.makedirs(JAX_CACHE, exist_ok=True)
  return JAX_CACHE


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory):
  """Mel latents of a tiny synthetic set (16/4/4 clips of 1 s), prepared once per session."""
  from almtok import prepare  # pylint: disable=g-import-not-at-top
  from configs import prepare as prepare_config  # pylint: disable=g-import-not-at-top
  workdir, lock = _shared_dir(tmp_path_factory, "prep")
  with lock:
    if not (workdir / "latents" / "stats.json").exists():
      prepare.prepare(prepare_config.get_config("synth_sounds,size=tiny,seconds=1.0"),
                      str(workdir))
  return f"{workdir}/latents"


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, tiny_latents):
  """A training workdir of the tiny LM trained 20 steps on `tiny_latents` (in-process), with
  the config of `tests.tiny.tiny_lm_config`."""
  from almtok import train  # pylint: disable=g-import-not-at-top
  from tests import tiny  # pylint: disable=g-import-not-at-top
  workdir, lock = _shared_dir(tmp_path_factory, "lm")
  with lock:
    if not (workdir / "checkpoints" / "20").exists():
      train.train_and_evaluate(tiny.tiny_lm_config(tiny_latents), str(workdir))
  return str(workdir)


@pytest.fixture(scope="session")
def tiny_rvq(tmp_path_factory, tiny_latents):
  """An RVQ export (2 codebooks of 16 codes) fitted on `tiny_latents`, built once per session."""
  from almtok.quantizers import rvq  # pylint: disable=g-import-not-at-top
  from configs import rvq as rvq_config  # pylint: disable=g-import-not-at-top
  workdir, lock = _shared_dir(tmp_path_factory, "rvq")
  with lock:
    if not (workdir / "rvq.json").exists():
      rvq.run(rvq_config.get_config(f"tiny,latents_dir={tiny_latents}"), str(workdir))
  return str(workdir)


@pytest.fixture(scope="session")
def tiny_dlm(tmp_path_factory, tiny_latents, tiny_rvq):
  """A training workdir of the tiny discrete baseline trained 20 steps on `tiny_latents`'
  codes (in-process), with the config of `tests.tiny.tiny_dlm_config`."""
  from almtok import train  # pylint: disable=g-import-not-at-top
  from tests import tiny  # pylint: disable=g-import-not-at-top
  workdir, lock = _shared_dir(tmp_path_factory, "dlm")
  with lock:
    if not (workdir / "checkpoints" / "20").exists():
      train.train_and_evaluate(tiny.tiny_dlm_config(tiny_latents, tiny_rvq), str(workdir))
  return str(workdir)
