"""The generate command line: outputs per caption, and one-line errors for bad arguments."""

import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, "-m", "almtok.generate", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, check=False)


def test_writes_wav_png_and_settings(tiny_lm, tmp_path):
  out = tmp_path / "clips"
  result = _run(f"--workdir={tiny_lm}", "--held_out=2", "--seconds=1", f"--out={out}",
                "--steps=5", "--seed=3")
  assert result.returncode == 0, result.stderr[-2000:]
  for i in range(2):
    info = sf.info(out / f"{i:03d}.wav")
    assert info.samplerate == 16_000 and abs(info.duration - 1.0) < 0.05
    assert os.path.getsize(out / f"{i:03d}.png") > 5_000
  settings = json.loads((tmp_path / "clips.json").read_text())
  assert settings["seed"] == 3 and settings["steps"] == 5 and len(settings["captions"]) == 2


@pytest.mark.parametrize("args,expected", [
    (["--caption="], "error: caption 1 is empty"),
    (["--caption=a beep", "--seconds=0"], "error: --seconds=0: must be positive"),
    (["--caption=a beep", "--seconds=60"], "error: --seconds=60: longer than the trained"),
    (["--caption=a beep", "--captions_file=x.txt"], "error: give exactly one of"),
    (["--caption=a beep", "--temperature=0"], "error: temperature=0.0: must be > 0"),
])
def test_bad_arguments_fail_in_one_line(tiny_lm, args, expected):
  result = _run(f"--workdir={tiny_lm}", *args)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-500:]


def test_missing_and_incompatible_checkpoints(tiny_lm, tmp_path):
  result = _run(f"--workdir={tmp_path}", "--caption=a beep")
  assert result.returncode == 2
  assert "no finished checkpoint" in result.stderr.strip().splitlines()[-1]
  # A config whose token size does not match the latents it names.
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "checkpoints" / "1").mkdir(parents=True)
  config = json.loads(open(os.path.join(tiny_lm, "config.json")).read())
  config["model"]["token_dim"] = 7
  (bad / "config.json").write_text(json.dumps(config))
  result = _run(f"--workdir={bad}", "--caption=a beep")
  assert result.returncode == 2
  assert "token_dim=7 does not match the latents' latent_dim=256" in result.stderr
