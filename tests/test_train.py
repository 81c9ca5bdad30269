"""The trainer end to end: resumes are bitwise, kills never leave a half checkpoint, SIGTERM
saves, non-finite losses stop cleanly, bad configs and busy workdirs are refused, and
TensorBoard gets every scalar and the generated audio.

Every run is `python -m almtok.train` in a subprocess on the tiny synthetic latents, with one
config (`cli_args`), so that the runs share compiled programs through a per-session JAX
compilation cache. Per-step losses are read back from the TensorBoard event files (one file per
process, named with its pid), parameters from the checkpoints.

Resume runs are compared bitwise: on CPU a restored state, the restored data iterator and
`fold_in(seed, step)` feed the same compiled program the same inputs, so any difference is a bug
(a state or input that the checkpoint missed), not rounding.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
import soundfile
from flax import nnx

from almtok import checkpoint
from almtok import events
from almtok import optim
from almtok import sharding
from almtok import state as state_lib
from almtok.latents import store as latents_lib
from almtok.latents import pipeline
from configs import synth_small

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY, BATCH = 16, 4, 4
# One config for every run; 20 of the clips' 25 tokens, so that the random crops are exercised.
OVERRIDES = {"data.seq_len": 20, "train.log_every": 1, "train.checkpoint_every": EVERY,
             "train.eval_every": STEPS, "train.keep_checkpoints": 3}
SCALARS = ("loss", "ntp_loss", "mntp_loss", "grad_norm", "lr", "tokens_per_s", "mfu",
           "model_flops_per_s_per_device", "ema_decay")
TIMEOUT_S = 420
# Kill points are drawn at random; the seed is in every message that depends on it, and
# ALMTOK_TEST_SEED=<seed> replays a run.
SEED = int(os.environ.get("ALMTOK_TEST_SEED") or random.SystemRandom().randrange(1 << 30))

# `python -m almtok.train` whose process kills itself (SIGKILL) at one known point of one save:
# the step's files are all written into orbax's temporary directory, and the rename that
# commits them is next. argv[1] is that step; the trainer's arguments follow.
_KILL_BEFORE_COMMIT = r"""
import os
import signal
import sys
from orbax.checkpoint._src.path import atomicity
from almtok import configlib, train

KILL_STEP = sys.argv.pop(1)
_finalize = atomicity.AtomicRenameTemporaryPath.finalize


async def finalize(self):
  if self._final_path.name == KILL_STEP:
    print(f"killing before the commit of step {KILL_STEP}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
  return await _finalize(self)


atomicity.AtomicRenameTemporaryPath.finalize = finalize
if __name__ == "__main__":
  train.define_flags()
  configlib.run(train.main)
"""


# ----------------------------------------------------------------------------------------------
# Running the trainer.
# ----------------------------------------------------------------------------------------------


def config_arg(steps: int = STEPS) -> str:
  return f"--config=configs/synth_small.py:size=tiny,steps={steps},batch={BATCH}"


def cli_args(latents_dir: str, workdir: str, steps: int = STEPS, **overrides) -> list[str]:
  """`-m almtok.train` arguments of the shared tiny config; `overrides` use '.'-free keys
  (`train__sample_every=16` for `train.sample_every`)."""
  values = dict(OVERRIDES, **{k.replace("__", "."): v for k, v in overrides.items()})
  return (["-m", "almtok.train", config_arg(steps), f"--config.data.latents_dir={latents_dir}"]
          + [f"--config.{k}={v}" for k, v in values.items()] + [f"--workdir={workdir}"])


def tiny_config(latents_dir: str, steps: int = STEPS, **overrides):
  """The in-process twin of `cli_args` (for `state.load_model` and the pipeline)."""
  config = synth_small.get_config(f"size=tiny,steps={steps},batch={BATCH}")
  values = dict(OVERRIDES, **{k.replace("__", "."): v for k, v in overrides.items()})
  config.update_from_flattened_dict(dict(values, **{"data.latents_dir": latents_dir}))
  return config


# The trainer runs here are a few steps of the tiny model, whose time goes to compiling: LLVM at
# -O0 compiles about a third faster (and runs slower, which a few steps do not feel). Every pair
# of runs that a test compares shares the flag.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def subprocess_env(cache_dir: str, devices: int | None = None) -> dict[str, str]:
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             XLA_FLAGS=FAST_COMPILE)
  if devices:
    env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
  return env


class Trainer:
  """A subprocess whose merged output is read line by line; `cues` are (regex, signal) pairs,
  each sent once, from the reading thread, the moment a line matches."""

  def __init__(self, args: list[str], env: dict[str, str], cues=()):
    self.cues = list(cues)
    self.fired: list[tuple[re.Match, int]] = []
    self.lines: list[str] = []
    self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  @property
  def pid(self) -> int:
    return self.proc.pid

  @property
  def output(self) -> str:
    return "".join(self.lines)

  def _read(self) -> None:
    for line in self.proc.stdout:
      for cue in list(self.cues):
        match = re.search(cue[0], line)
        if match:
          self.proc.send_signal(cue[1])
          self.cues.remove(cue)
          self.fired.append((match, cue[1]))
      self.lines.append(line)

  def wait(self, timeout: float = TIMEOUT_S) -> int:
    try:
      rc = self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      raise AssertionError(f"trainer timed out after {timeout} s:\n{self.tail()}") from None
    self._reader.join(30)
    return rc

  def tail(self, n: int = 40) -> str:
    return "".join(self.lines[-n:])


def step_line(step: int) -> str:
  """The trainer's log line of a finished step."""
  return rf"\] step {step}: "


# ----------------------------------------------------------------------------------------------
# Reading what it wrote.
# ----------------------------------------------------------------------------------------------


def event_file(workdir: str, pid: int) -> str | None:
  """The TensorBoard event file of the process `pid` (clu names it after the pid)."""
  paths = glob.glob(os.path.join(workdir, f"events.out.tfevents.*.{pid}.*"))
  assert len(paths) <= 1, paths
  return paths[0] if paths else None


def read_events(path: str) -> dict[str, dict[int, object]]:
  """{tag: {step: value}} of one event file (scalars as floats), plus {"_plugins": {tag: plugin}}.
  """
  ev = events.read_events(path)
  out = {tag: {step: float(v) if v.dtype.kind == "f" and v.ndim == 0 else v for step, v in pairs}
         for tag, pairs in ev.values.items()}
  out["_plugins"] = ev.plugins
  return out


def complete_steps(ckpt_dir: str) -> list[int]:
  return sorted(int(name) for name in os.listdir(ckpt_dir) if name.isdigit())


def temporary_dirs(ckpt_dir: str) -> list[str]:
  return sorted(name for name in os.listdir(ckpt_dir) if not name.isdigit())


def latest_step(workdir: str) -> int | None:
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None,
                                 async_save=False)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def restore_state(workdir: str, config) -> tuple[dict[str, np.ndarray], dict]:
  """The newest checkpoint's whole train state ({'params/decoder/...': array, 'ema/...',
  'opt_state/...', 'step'}) and its metadata (data iterator, config)."""
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  _, abstract, shardings = state_lib.abstract_state(config, mesh,
                                                    optim.make_optimizer(config.train))
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None,
                               async_save=False) as ckpt:
    state, meta = state_lib.restore(ckpt, ckpt.latest_step(), target, workdir)
  return {sharding.path_str(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(state)}, meta


def params_of(workdir: str, config, use_ema: bool) -> dict[str, np.ndarray]:
  model = state_lib.load_model(workdir, config, use_ema=use_ema)
  return {"/".join(map(str, path)): np.asarray(v[...])
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ----------------------------------------------------------------------------------------------
# Runs shared by the tests.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tiny_latents, jax_cache, tmp_path_factory):
  """The uninterrupted run (which also writes audio samples at its last step), started together
  with a second trainer on the same workdir: the one that reaches the lock second is refused."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  args = cli_args(tiny_latents, workdir, train__sample_every=STEPS, sample__solver_steps=2)
  env = subprocess_env(jax_cache)
  first, second = Trainer(args, env), Trainer(args, env)
  codes = first.wait(), second.wait()
  assert sorted(codes) == [0, 2], f"exit codes {codes}:\n{first.tail()}\n{second.tail()}"
  winner, loser = (first, second) if codes[0] == 0 else (second, first)
  return dict(workdir=workdir, run=winner, refused=loser,
              events=read_events(event_file(workdir, winner.pid)))


@pytest.fixture(scope="module")
def interrupted(tiny_latents, jax_cache, tmp_path_factory):
  """The reference config in a fresh workdir, stopped twice and resumed each time:
  1. SIGKILL while saving a random checkpoint c1 in {8, 12} (after 4 was written), at the last
     moment: its files are written, the rename that commits them is not done;
  2. SIGTERM after a random step of the resumed run (it saves there and exits 0);
  3. on to the end.
  """
  workdir = str(tmp_path_factory.mktemp("interrupted"))
  ckpt_dir = os.path.join(workdir, "checkpoints")
  # Its losses and state are compared with the reference's; its samples would be the same
  # program run once more for nothing.
  args, env = cli_args(tiny_latents, workdir, train__sample_every=0), subprocess_env(jax_cache)
  rng = random.Random(SEED)
  phases = []

  def run(cue_pattern=None, sig=None, kill_step=None):
    cmd = args if kill_step is None else ["-c", _KILL_BEFORE_COMMIT, str(kill_step)] + args[2:]
    trainer = Trainer(cmd, env, cues=[(cue_pattern, sig)] if cue_pattern else [])
    rc = trainer.wait()
    start = re.search(r"resumed from step (\d+)", trainer.output)
    phases.append(dict(trainer=trainer, rc=rc, start=int(start.group(1)) if start else 0,
                       after_dirs=sorted(os.listdir(ckpt_dir)), latest=latest_step(workdir),
                       fired=[m.group(0) for m, _ in trainer.fired]))
    return phases[-1]

  c1 = rng.choice([8, 12])
  killed = run(kill_step=c1)
  assert killed["rc"] == -signal.SIGKILL, (SEED, killed["trainer"].tail())
  assert f"killing before the commit of step {c1}" in killed["trainer"].output, SEED
  run(step_line(rng.randint(c1 - EVERY + 1, STEPS - EVERY)), signal.SIGTERM)
  run()
  return dict(workdir=workdir, phases=phases, c1=c1)


# ----------------------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------------------


def test_resumed_run_is_bitwise_the_uninterrupted_run(reference, interrupted, tiny_latents):
  want = reference["events"]["loss"]
  assert sorted(want) == list(range(1, STEPS + 1))
  got = {}
  for i, phase in enumerate(interrupted["phases"]):
    path = event_file(interrupted["workdir"], phase["trainer"].pid)
    if path is None:  # A killed run may die before its writer flushed anything.
      continue
    losses = read_events(path).get("loss", {})
    # Every step that any run logged, redone steps included, is the reference's loss exactly.
    for step, loss in losses.items():
      assert loss == want[step], f"seed {SEED}, run {i + 1}, step {step}: {loss} != {want[step]}"
    got.update(losses)
  # The resumed runs log every step after the checkpoint that the first one resumed from (what
  # the killed run logged before it died may not have reached the disk).
  first_resumed = interrupted["phases"][1]["start"]
  assert set(range(first_resumed + 1, STEPS + 1)) <= set(got), (SEED, sorted(got))

  # The final train state, leaf by leaf: parameters, EMA, Adam's moments and counters, the step;
  # and the data iterator's position.
  config = tiny_config(tiny_latents)
  want_state, want_meta = restore_state(reference["workdir"], config)
  got_state, got_meta = restore_state(interrupted["workdir"], config)
  assert want_state.keys() == got_state.keys()
  assert {n.split("/")[0] for n in want_state} == {"params", "ema", "opt_state", "step"}
  for name, want_leaf in want_state.items():
    np.testing.assert_array_equal(got_state[name], want_leaf, err_msg=f"seed {SEED}: {name}")
  assert got_meta["data_iterator"] == want_meta["data_iterator"], SEED
  # What generate and the notebook load is that EMA.
  for use_ema in (False, True):
    got_params = params_of(interrupted["workdir"], config, use_ema)
    tree = "ema" if use_ema else "params"
    for name, value in got_params.items():
      np.testing.assert_array_equal(value, want_state[f"{tree}/{name}"],
                                    err_msg=f"seed {SEED}: {tree}/{name}")


def test_kill_during_a_save_leaves_only_complete_checkpoints(interrupted):
  c1, phases = interrupted["c1"], interrupted["phases"]
  killed = phases[0]
  # The save of c1 was cut: its temporary directory is there, c1 itself is not.
  assert any(name.startswith(f"{c1}.") for name in killed["after_dirs"]), (
      SEED, killed["after_dirs"])
  assert str(c1) not in killed["after_dirs"], (SEED, killed["after_dirs"])
  for before, after in zip(phases, phases[1:]):
    # latest_step reports the newest complete step only, and the next run resumes from it.
    complete = [int(name) for name in before["after_dirs"] if name.isdigit()]
    assert before["latest"] == max(complete), (SEED, before["after_dirs"])
    assert after["start"] == before["latest"], SEED
    assert "Traceback" not in after["trainer"].output, (SEED, after["trainer"].tail())
  assert killed["latest"] == c1 - EVERY, SEED
  # The later runs saved again over the leftovers of the cut save; none is left at the end.
  final_dir = os.path.join(interrupted["workdir"], "checkpoints")
  assert not temporary_dirs(final_dir), (SEED, os.listdir(final_dir))
  assert complete_steps(final_dir)[-1] == phases[-1]["latest"] == STEPS, SEED


def test_sigterm_saves_the_current_step_and_exits_0(interrupted):
  phase, resumed = interrupted["phases"][1:]
  assert phase["rc"] == 0, (SEED, phase["trainer"].tail())
  stop = re.search(r"stopping at step (\d+) \(SIGTERM\)", phase["trainer"].output)
  assert stop, phase["trainer"].tail()
  stopped = int(stop.group(1))
  signalled = int(re.search(r"step (\d+)", phase["fired"][0]).group(1))
  assert signalled <= stopped < STEPS, SEED
  assert phase["latest"] == stopped, (SEED, phase["after_dirs"])
  assert resumed["start"] == stopped, SEED


def test_tensorboard_has_every_scalar_at_every_step_and_the_audio(reference, tiny_latents):
  logged = reference["events"]
  config = tiny_config(tiny_latents)
  lr = optim.learning_rate(config.train)
  for tag in SCALARS:
    assert sorted(logged[tag]) == list(range(1, STEPS + 1)), tag
    assert all(np.isfinite(v) for v in logged[tag].values()), tag
  for step in range(1, STEPS + 1):
    # The step's learning rate is the schedule's at the step count before the update.
    np.testing.assert_allclose(logged["lr"][step], float(lr(step - 1)), rtol=1e-6)
    np.testing.assert_allclose(logged["loss"][step],
                               logged["ntp_loss"][step] + logged["mntp_loss"][step], rtol=1e-6)
    assert logged["tokens_per_s"][step] > 0 and 0 < logged["mfu"][step] < 1
  # Both come from the same measured step rate: their ratio is the same at every step.
  ratio = [logged["mfu"][s] / logged["tokens_per_s"][s] for s in range(1, STEPS + 1)]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
  assert STEPS in logged["val/loss"]
  # The generated clips of the last step: WAVs at the tokenizer's rate, one per caption, and
  # their spectrogram images under tags of their own.
  plugins = logged["_plugins"]
  audio = sorted(t for t, p in plugins.items() if p == "audio")
  images = sorted(t for t, p in plugins.items() if p == "images")
  assert len(audio) == len(images) == config.train.sample_captions, plugins
  for tag in audio:
    (clip, _), = logged[tag][STEPS]
    wav, rate = soundfile.read(io.BytesIO(bytes(clip)))
    assert rate == 16_000 and abs(len(wav) - config.data.seq_len * rate // 25) <= rate // 25
    assert np.isfinite(wav).all()
  for tag in images:
    assert bytes(logged[tag][STEPS][2]).startswith(b"\x89PNG")


def test_second_trainer_on_a_busy_workdir_is_refused(reference):
  refused, run = reference["refused"], reference["run"]
  errors = [l for l in refused.lines if l.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in refused.output, refused.tail()
  assert reference["workdir"] in errors[0] and f"pid {run.pid}" in errors[0], errors
  assert "in use by another training process" in errors[0]


def _nan_latents(latents_dir: str, out_dir: str, bad_ids: set[str]) -> str:
  """A copy of the prepared latents where the train clips `bad_ids` are all NaN."""
  shutil.copytree(latents_dir, out_dir)
  for path in latents_lib.shard_paths(out_dir, "train"):
    records = latents_lib.read_shard(path)
    os.remove(path)
    latents_lib.write_shard(path, [latents_lib.encode_record(
        dataclasses.replace(r, latents=np.full_like(r.latents, np.nan)) if r.id in bad_ids
        else r) for r in records])
  return out_dir


def test_non_finite_loss_stops_in_one_line_and_keeps_the_last_checkpoint(
    tiny_latents, jax_cache, tmp_path):
  # The clips of the 4th batch are first seen there: steps 1-3 are finite, step 4 is not, and
  # the asynchronous save of step 3 is still being written when the trainer stops.
  config = tiny_config(tiny_latents, train__checkpoint_every=3)
  stream = iter(pipeline.make_dataset(
      tiny_latents, "train", seq_len=config.data.seq_len, batch_size=BATCH, seed=config.seed,
      text_max_len=config.model.text_len))
  ids = [set(map(str, next(stream)["id"])) for _ in range(4)]
  assert not ids[3] & set.union(*ids[:3])
  bad = _nan_latents(tiny_latents, str(tmp_path / "nan_latents"), ids[3])
  workdir = str(tmp_path / "lm")
  trainer = Trainer(cli_args(bad, workdir, train__checkpoint_every=3),
                    subprocess_env(jax_cache))
  assert trainer.wait() == 2, trainer.tail()
  errors = [l for l in trainer.lines if l.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in trainer.output, trainer.tail()
  assert re.match(r"error: step 4: loss is nan \(not finite\)", errors[0]), errors
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert complete_steps(ckpt_dir) == [3] and not temporary_dirs(ckpt_dir)
  state, meta = restore_state(workdir, config)
  assert state["step"] == 3 and meta["data_iterator"]["next_index"] == 3
  assert all(np.isfinite(x).all() for x in state.values())


# The program's one-line message; tests/test_train_errors.py checks every bad value in-process.
@pytest.mark.parametrize("override, key", [
    ("--config.train.learning_rat=0.1", "learning_rat"),
])
def test_bad_config_fails_at_start_in_one_line(tmp_path, jax_cache, override, key):
  workdir = str(tmp_path / "lm")
  proc = subprocess.run(
      [sys.executable, "-m", "almtok.train", config_arg(), override, f"--workdir={workdir}"],
      cwd=ROOT, env=subprocess_env(jax_cache), capture_output=True, text=True,
      timeout=TIMEOUT_S)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], proc.stderr
  assert not os.path.exists(workdir)  # Refused before any work started.
