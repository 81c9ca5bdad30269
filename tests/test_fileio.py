"""Atomic outputs: an exception or a SIGKILL at any point leaves the old file or the new one."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from almtok import checkpoint
from almtok import fileio


def _listing(folder):
  return sorted(os.listdir(folder))


def _run_until_killed(code, *args):
  """Runs `code` in a fresh Python that must die of SIGKILL (at a point the code chooses)."""
  done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == -signal.SIGKILL, done.stderr


def test_an_exception_keeps_the_old_content_and_no_temporaries(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="boom"):
    with fileio.atomic_write(path) as f:
      f.write("half of the new")
      raise RuntimeError("boom")
  assert path.read_text() == "old"
  assert _listing(tmp_path) == ["a.txt"]
  with pytest.raises(TypeError):   # Unserialisable: fails before any file exists.
    fileio.atomic_json(tmp_path / "b.json", {"x": object()})
  assert _listing(tmp_path) == ["a.txt"]


def test_a_clean_exit_replaces_the_file_and_keeps_its_permissions(tmp_path):
  path = tmp_path / "a.json"
  path.write_text("old")
  os.chmod(path, 0o640)
  fileio.atomic_json(path, {"b": [1, 2]}, indent=1)
  assert json.loads(path.read_text()) == {"b": [1, 2]}
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
  with fileio.atomic_write(tmp_path / "c.bin", "wb") as f:
    f.write(b"\x00\x01")
  assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
  assert _listing(tmp_path) == ["a.json", "c.bin"]
  with pytest.raises(ValueError, match="mode"):
    with fileio.atomic_write(path, "a"):
      pass


def test_a_kill_mid_write_keeps_the_old_content(tmp_path):
  path = tmp_path / "target.txt"
  path.write_text("old content")
  _run_until_killed("""
      import os, signal, sys
      from almtok import fileio
      with fileio.atomic_write(sys.argv[1]) as f:
        f.write("new content, the first half")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        f.write(" and the second half")
      """, path)
  assert path.read_text() == "old content"
  # A killed process cannot clean up: its temporary stays, hidden and ending in .tmp (which
  # `prepare` deletes), and the next write succeeds beside it.
  leftovers = [n for n in _listing(tmp_path) if n != "target.txt"]
  assert len(leftovers) == 1
  assert leftovers[0].startswith(".target.txt.") and leftovers[0].endswith(".tmp")
  fileio.atomic_json(path, "new")
  assert json.loads(path.read_text()) == "new"


def test_atomic_path_with_soundfile(tmp_path):
  path = tmp_path / "x.wav"
  wav = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
  with fileio.atomic_path(path) as tmp:
    assert os.path.dirname(tmp) == str(tmp_path) and not os.path.exists(path)
    sf.write(tmp, wav, 16000, subtype="FLOAT", format="WAV")
  np.testing.assert_array_equal(sf.read(path, dtype="float32")[0], wav)
  with pytest.raises(RuntimeError):
    with fileio.atomic_path(path) as tmp:
      sf.write(tmp, -wav, 16000, subtype="FLOAT", format="WAV")
      raise RuntimeError("the caller failed after the writer")
  np.testing.assert_array_equal(sf.read(path, dtype="float32")[0], wav)
  with pytest.raises(FileNotFoundError, match="created nothing"):
    with fileio.atomic_path(tmp_path / "never.wav"):
      pass
  assert _listing(tmp_path) == ["x.wav"]


# ---------------------------------------------------------------------------------------------
# Weights + JSON exports.
# ---------------------------------------------------------------------------------------------


def _codebooks(value):
  return np.full((2, 4, 3), value, np.float32)


def test_a_kill_between_weights_and_json_leaves_the_previous_rvq_export(tmp_path):
  from almtok.quantizers import rvq as rvq_lib  # pylint: disable=g-import-not-at-top
  rvq_lib.RVQ(_codebooks(1.0)).export(tmp_path)
  before = _listing(tmp_path)
  # Export B dies when it is about to write rvq.json, after its weights are on disk.
  _run_until_killed("""
      import os, signal, sys
      import numpy as np
      from almtok import fileio
      from almtok.quantizers import rvq as rvq_lib
      write_json = fileio.atomic_json
      def die_before_the_manifest(path, obj, **kwargs):
        if os.path.basename(path) == "rvq.json":
          os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, obj, **kwargs)
      fileio.atomic_json = die_before_the_manifest
      rvq_lib.RVQ(np.full((2, 4, 3), 2.0, np.float32)).export(sys.argv[1])
      """, tmp_path)
  orphans = sorted(set(_listing(tmp_path)) - set(before))
  assert len(orphans) == 1 and orphans[0].startswith("rvq-")   # B's weights were written.
  for where in (tmp_path, tmp_path / "rvq.json", tmp_path / "rvq.safetensors"):
    np.testing.assert_array_equal(rvq_lib.RVQ.from_export(where).codebooks_QxKxC,
                                  _codebooks(1.0))
  # The next export completes and removes the orphan.
  path = rvq_lib.RVQ(_codebooks(3.0)).export(tmp_path)
  assert os.path.basename(path) == "rvq.safetensors"
  np.testing.assert_array_equal(rvq_lib.RVQ.from_export(path).codebooks_QxKxC, _codebooks(3.0))
  names = _listing(tmp_path)
  assert len(names) == 3 and "rvq.json" in names and "rvq.safetensors" in names
  hashed = next(n for n in names if n.startswith("rvq-"))
  np.testing.assert_array_equal(rvq_lib.RVQ.from_export(tmp_path / hashed).codebooks_QxKxC,
                                _codebooks(3.0))


def test_an_exception_between_weights_and_json_leaves_the_previous_mel_vae_export(
    tmp_path, monkeypatch):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from almtok.tokenizers import mel_vae  # pylint: disable=g-import-not-at-top
  kwargs = dict(n_mels=16, latent_channels=4, channels=(4, 4, 4), num_blocks=1, num_groups=2,
                dtype="float32")
  first = mel_vae.MelVAE(**kwargs, rngs=nnx.Rngs(0))
  second = mel_vae.MelVAE(**kwargs, rngs=nnx.Rngs(1))
  mel_vae.export(first, kwargs, str(tmp_path), extra=dict(which="first"))

  def fail(path, obj, **dump_kwargs):
    raise KeyboardInterrupt(path)

  monkeypatch.setattr(fileio, "atomic_json", fail)
  with pytest.raises(KeyboardInterrupt):
    mel_vae.export(second, kwargs, str(tmp_path), extra=dict(which="second"))
  monkeypatch.undo()
  for where in (tmp_path, tmp_path / "mel_vae.safetensors"):
    model, description = mel_vae.load_model(str(where))
    assert description["which"] == "first"
    want, got = checkpoint.flat_params(first), checkpoint.flat_params(model)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_read_export_checks_the_weights_against_the_manifest(tmp_path):
  public, meta = fileio.write_export(tmp_path, "w", b"first weights", {"n": 1})
  assert fileio.read_export(tmp_path, "w")[:2] == (
      b"first weights", json.loads((tmp_path / "w.json").read_text()))
  assert (tmp_path / "w.safetensors").read_bytes() == b"first weights"
  described = json.loads((tmp_path / "w.json").read_text())
  # Weights that are not the ones the manifest names are refused, not paired with it.
  os.remove(tmp_path / described["weights"])
  os.remove(public)
  with open(public, "wb") as f:
    f.write(b"other weights")
  with pytest.raises(ValueError, match="sha256"):
    fileio.read_export(meta, "w")
  os.remove(public)
  with pytest.raises(FileNotFoundError, match="missing"):
    fileio.read_export(meta, "w")
  # An export from before manifests (no weights_sha256) is read as the plain pair.
  fileio.atomic_json(tmp_path / "old.json", {"n": 0})
  fileio.atomic_bytes(tmp_path / "old.safetensors", b"old weights")
  assert fileio.read_export(tmp_path / "old.safetensors", "old")[0] == b"old weights"
