"""The Colab inference notebook runs headless against a tiny trained checkpoint, and gives the
clips that the generate command line gives for the same captions and seed."""

import os
import subprocess
import sys

import nbformat
from nbclient import NotebookClient
import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inference_notebook_runs(tiny_lm, tmp_path, monkeypatch):
  out = tmp_path / "nb_out"
  monkeypatch.setenv("ALMTOK_WORKDIR", tiny_lm)
  monkeypatch.setenv("ALMTOK_OUT", str(out))
  monkeypatch.setenv("ALMTOK_SECONDS", "1.0")
  monkeypatch.setenv("ALMTOK_STEPS", "5")
  nb = nbformat.read(os.path.join(ROOT, "colabs", "inference_demo.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  audio_outputs = [o for o in outputs if "text/html" in o.get("data", {})
                   and "<audio" in o["data"]["text/html"]]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(audio_outputs) == 4 and len(images) == 4  # 3 captions + 1 continuation.
  for name in ("caption_0.wav", "caption_1.wav", "caption_2.wav", "continued.wav"):
    info = sf.info(out / name)
    assert info.samplerate == 16_000 and abs(info.duration - 1.0) < 0.05
  text = "".join(o.get("text", "") for o in outputs)
  assert "prompt tokens: 6 of 25" in text  # A quarter of 1 s at 25 tokens/s, rounded down.

  # The command line with the notebook's captions (one batch, as the notebook), seed and
  # settings writes the same samples: the run's prediction type reaches both the same way.
  captions = tmp_path / "captions.txt"
  captions.write_text("\n".join(["a high-pitched sine tone fading in",
                                 "rapid clicks at a fast pace",
                                 "a low saw note followed by a burst of white noise"]) + "\n")
  cli = subprocess.run(
      [sys.executable, "-m", "almtok.generate", f"--workdir={tiny_lm}",
       f"--captions_file={captions}", "--seconds=1.0", "--config.sample.solver_steps=5", "--seed=0",
       f"--out={tmp_path / 'cli'}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert cli.returncode == 0, cli.stderr[-2000:]
  for i in range(3):
    want, _ = sf.read(out / f"caption_{i}.wav", dtype="int16")
    got, _ = sf.read(tmp_path / "cli" / f"{i:03d}.wav", dtype="int16")
    np.testing.assert_array_equal(got, want, err_msg=f"caption {i}")


def test_inference_notebook_runs_on_a_discrete_run(tiny_dlm, tmp_path, monkeypatch):
  out = tmp_path / "nb_out"
  monkeypatch.setenv("ALMTOK_WORKDIR", tiny_dlm)
  monkeypatch.setenv("ALMTOK_OUT", str(out))
  monkeypatch.setenv("ALMTOK_SECONDS", "1.0")
  nb = nbformat.read(os.path.join(ROOT, "colabs", "inference_demo.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert "discrete_lm: 3 clips of 1.00 s" in text and "prompt tokens: 6 of 25" in text
  for name in ("caption_0.wav", "caption_1.wav", "caption_2.wav", "continued.wav"):
    assert abs(sf.info(out / name).duration - 1.0) < 0.05
