"""The generate command line: outputs per caption with their levels, the run's own prediction
type, the EMA weights read alone, and one-line errors for bad arguments (and checkpoints of
another format) before anything is loaded or written.

The bad arguments are checked in-process through `generate.run` (what `main` calls); one
subprocess checks that the program prints such an error as one line.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from almtok import configlib
from almtok import generate
from almtok import sample
from almtok import state as state_lib
from tests.tiny import tiny_lm_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, "-m", "almtok.generate", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, check=False)


def test_writes_wav_png_settings_and_levels(tiny_lm, tmp_path):
  out = tmp_path / "clips"
  result = _run(f"--workdir={tiny_lm}", "--held_out=2", "--seconds=1", f"--out={out}",
                "--config.sample.solver_steps=5", "--seed=3")
  assert result.returncode == 0, result.stderr[-2000:]
  for i in range(2):
    info = sf.info(out / f"{i:03d}.wav")
    assert info.samplerate == 16_000 and abs(info.duration - 1.0) < 0.05
    assert os.path.getsize(out / f"{i:03d}.png") > 5_000
  settings = json.loads((tmp_path / "clips.json").read_text())
  assert settings["seed"] == 3 and settings["solver_steps"] == 5 and len(settings["captions"]) == 2
  # The head's prediction type is the run's, and each clip's levels are recorded and printed
  # beside those of its held-out clip through the same tokenizer.
  run_config = json.loads(open(os.path.join(tiny_lm, "config.json")).read())
  assert settings["prediction"] == run_config["diffusion"]["prediction"] == "v"
  assert [w["strategy"] for w in settings["written"]] == ["limit", "limit"]
  for w in settings["written"]:
    assert w["gain"] <= 1.0 and w["clipped"] == 0 and w["peak"] <= 1.0
    assert w["reference"]["rms_db"] < 0
  printed = [l for l in result.stdout.splitlines() if l.startswith(str(out))]
  assert len(printed) == 2 and all("dBFS" in l and "held-out clip" in l for l in printed)


def test_bad_argument_is_one_line_from_the_program(tiny_lm, tmp_path):
  result = _run(f"--workdir={tiny_lm}", "--caption=a beep", "--config.sample.solver_steps=2000",
                f"--out={tmp_path}/x.wav")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith(
      "error: config.sample.solver_steps=2000: the head was trained on 1000"), lines
  assert not os.listdir(tmp_path)


# (arguments of generate.run besides workdir and out, what the one line must start with).
BAD = [
    (dict(caption=""), "caption 1 is empty"),
    (dict(caption="a beep", seconds=0), "--seconds=0: must be positive"),
    (dict(caption="a beep", seconds=60, sliding_window=False),
     "--seconds=60: longer than the trained"),
    (dict(caption="a beep", seconds=60, window_stride=30), "--window_stride=30: must be more"),
    (dict(caption="a beep", seconds=0.02), "--seconds=0.02: shorter than one token"),
    (dict(caption="a beep", captions_file="x.txt"), "give exactly one of"),
    (dict(caption="a beep", sample_overrides=dict(temperature=0)),
     "config.sample.temperature=0: must be > 0"),
    (dict(caption="a beep", sample_overrides=dict(solver_steps=2000)),
     "config.sample.solver_steps=2000: the head was trained on 1000"),
    (dict(caption="a beep", sample_overrides=dict(stepz=20)),
     "config.sample.stepz: the continuous_lm in "),
    (dict(held_out_count=5), "--held_out=5: the test split of"),
    (dict(held_out_count=0), "--held_out=0: must be >= 1"),
    (dict(caption="a beep", normalize="loud"), "--normalize=loud: must be one of"),
    (dict(caption="a beep", sample_overrides=dict(threshold=1.5)),
     "config.sample.threshold=1.5: must be a percentile"),
]


@pytest.mark.parametrize("kwargs,expected", BAD, ids=[e.split(":")[0] for _, e in BAD])
def test_bad_arguments_fail_before_any_work(tiny_lm, tmp_path, kwargs, expected):
  out = tmp_path / "out"
  with pytest.raises(configlib.ConfigError) as e:
    generate.run(workdir=tiny_lm, out=str(out), **kwargs)
  assert str(e.value).startswith(expected) and "\n" not in str(e.value), str(e.value)
  assert not out.exists() and not os.listdir(tmp_path)


def test_clips_beyond_the_trained_context_slide_a_window(tiny_lm, tmp_path):
  # The tiny run's context is 4 s (100 tokens): 5 s is one window and one stride of 2 s.
  out = tmp_path / "long.wav"
  used = generate.run(workdir=tiny_lm, caption="a beep", seconds=5.0, window_stride=2.0,
                      out=str(out), sample_overrides=dict(solver_steps=2))
  assert abs(sf.info(out).duration - 5.0) < 0.05
  assert (used["window"], used["stride"], used["num_tokens"]) == (100, 50, 125)


def test_settings_that_contradict_the_run_are_refused(tiny_lm):
  with pytest.raises(configlib.ConfigError, match=r"prediction='eps': the model in .* was "
                     r"trained to predict 'v'"):
    generate.generate(tiny_lm, ["a beep"], 1.0, sample.SamplerSettings(prediction="eps"))
  with pytest.raises(ValueError, match="prediction is unset"):
    sample.Sampler(None, None, sample.SamplerSettings())


def test_missing_and_incompatible_checkpoints(tiny_lm, tmp_path):
  with pytest.raises(configlib.ConfigError, match="no finished checkpoint"):
    generate.run(workdir=str(tmp_path), caption="a beep", out=str(tmp_path / "x.wav"))
  # A config whose token size does not match the latents it names.
  bad = tmp_path / "bad"
  (bad / "checkpoints" / "1").mkdir(parents=True)
  shutil.copy(os.path.join(tiny_lm, "latents_stats.json"), bad)
  shutil.copy(os.path.join(tiny_lm, "run.json"), bad)
  config = json.loads(open(os.path.join(tiny_lm, "config.json")).read())
  config["model"]["token_dim"] = 7
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(configlib.ConfigError,
                     match="token_dim=7 does not match the latents' latent_dim=256"):
    generate.run(workdir=str(bad), caption="a beep", out=str(tmp_path / "y.wav"))


def test_latents_without_a_recorded_range_are_refused_in_one_line(tiny_lm, tmp_path):
  # A run whose latents were prepared before stats.json recorded each channel's range.
  workdir = tmp_path / "lm"
  shutil.copytree(tiny_lm, workdir)
  stats = json.loads((workdir / "latents_stats.json").read_text())
  del stats["min"], stats["max"]
  (workdir / "latents_stats.json").write_text(json.dumps(stats))
  with pytest.raises(configlib.ConfigError, match=r"records no per-channel range .* "
                     r"\(--config.sample.data_range=false\)"):
    generate.generate(str(workdir), ["a beep"], 1.0, sample.SamplerSettings())


def test_generation_reads_the_ema_item_alone(tiny_lm, tiny_latents, tmp_path):
  config = tiny_lm_config(tiny_latents)
  want = nnx.state(state_lib.load_model(tiny_lm, config), nnx.Param)
  # Without the optimizer state and parameters on disk, the EMA model still loads, the same.
  workdir = tmp_path / "lm"
  shutil.copytree(tiny_lm, workdir)
  shutil.rmtree(workdir / "checkpoints" / "20" / "state")
  got = nnx.state(state_lib.load_model(str(workdir), config), nnx.Param)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tiny_lm, tmp_path):
  workdir = tmp_path / "lm"
  shutil.copytree(tiny_lm, workdir)
  meta_file = workdir / "checkpoints" / "20" / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  del meta["format"]   # As the first layout wrote it.
  meta_file.write_text(json.dumps(meta))
  with pytest.raises(configlib.ConfigError, match=r"its checkpoints are in format almtok-run-1; "
                     r"this almtok reads almtok-run-2 \(train it again with this almtok\)$"):
    generate.generate(str(workdir), ["a beep"], 1.0, sample.SamplerSettings())


def test_the_workdir_stands_on_its_own(tiny_lm, tiny_latents, tmp_path):
  """Generation from captions needs only the workdir; what needs the data says when it is gone
  or changed."""
  latents = tmp_path / "latents"
  shutil.copytree(tiny_latents, latents)
  workdir = tmp_path / "lm"
  shutil.copytree(tiny_lm, workdir)
  run = json.loads((workdir / "run.json").read_text())
  (workdir / "run.json").write_text(json.dumps(dict(run, latents_dir=str(latents))))
  config = json.loads((workdir / "config.json").read_text())
  config["data"]["latents_dir"] = str(latents)
  (workdir / "config.json").write_text(json.dumps(config))
  kw = dict(seconds=1.0, sample_overrides=dict(solver_steps=2))
  want = generate.run(workdir=str(workdir), held_out_count=1, out=str(tmp_path / "a"), **kw)
  # The data moved away: captions still generate the same clip; held-out captions cannot.
  shutil.move(str(latents), str(tmp_path / "moved"))
  got = generate.run(workdir=str(workdir), caption=want["captions"][0],
                     out=str(tmp_path / "b.wav"), **kw)
  a, _ = sf.read(tmp_path / "a" / "000.wav", dtype="int16")
  b, _ = sf.read(tmp_path / "b.wav", dtype="int16")
  np.testing.assert_array_equal(a, b)
  assert got["prediction"] == "v"
  with pytest.raises(configlib.ConfigError, match=r"trained on the latents in .*, which are "
                     r"gone; this needs them \(generating from captions does not\)$"):
    generate.run(workdir=str(workdir), held_out_count=1, out=str(tmp_path / "c"), **kw)
  # Back, but changed.
  shutil.move(str(tmp_path / "moved"), str(latents))
  stats = json.loads((latents / "stats.json").read_text())
  (latents / "stats.json").write_text(json.dumps(dict(stats, note="changed")))
  with pytest.raises(configlib.ConfigError, match=r"which have changed since"):
    generate.run(workdir=str(workdir), held_out_count=1, out=str(tmp_path / "d"), **kw)


def test_a_run_from_before_sharding_rules_and_key_renames_loads(tiny_lm, tmp_path):
  # Runs trained before the partition rules became config data were laid out by the defaults;
  # runs trained before keys were renamed (state.RENAMED_KEYS) name them the old way.
  workdir = tmp_path / "lm"
  shutil.copytree(tiny_lm, workdir)
  config = json.loads((workdir / "config.json").read_text())
  del config["sharding_rules"]
  config["sample"]["steps"] = config["sample"].pop("solver_steps")
  config["sample"]["sampler"] = config["sample"].pop("solver")
  config["diffusion"]["num_steps"] = config["diffusion"].pop("timesteps")
  (workdir / "config.json").write_text(json.dumps(config))
  loaded = state_lib.load_run_config(str(workdir))
  assert (loaded["sample"]["solver_steps"], loaded["sample"]["solver"],
          loaded["diffusion"]["timesteps"]) == (2, "ddpm", 1000)
  assert "steps" not in loaded["sample"] and "num_steps" not in loaded["diffusion"]
  wav, rate, _ = generate.generate(str(workdir), ["a beep"], 0.2,
                                   sample.settings_from_config(loaded, solver_steps=2))
  assert wav.shape[0] == 1 and rate == 16_000 and np.all(np.isfinite(wav))
