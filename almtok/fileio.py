"""Atomic outputs: a file on disk is always a whole old version or a whole new one.

A process killed at any moment (SIGKILL, OOM, a pre-empted machine) leaves at most a hidden
temporary next to the target, never half a target. Each writer below writes to a temporary in
the target's own folder (so the final `os.replace` is a rename within one filesystem, which
POSIX makes atomic), flushes and fsyncs it, and only then renames it onto the target.

Temporaries are named `.<basename>.<pid>-<random>.tmp`: hidden, unique per writer (two
processes writing the same target do not collide), and ending in `.tmp` so that cleaners that
already delete `*.tmp` leftovers (`almtok.prepare`) also delete those of a killed writer.

Pairs (weights + JSON description, as the mel-VAE and RVQ exports write) need more than two
atomic files: a kill between the two renames would leave new weights beside an old JSON. The
export folder cannot be swapped as a whole either, because the mel-VAE exports into its training
workdir, next to checkpoints and events. So the JSON is the manifest (`write_export`):

  1. the weights go to `<stem>-<sha256[:16]>.safetensors`, a name that only that content has;
  2. `<stem>.json` is written last, atomically, naming that file and its full sha256; this rename
     is the moment the new export exists;
  3. `<stem>.safetensors` (the public path that configs and tools name) is then re-pointed, as a
     hard link (or a copy), at the new weights, and weights files of earlier exports are removed.

A kill before step 2 leaves the previous JSON, which still names the previous weights (nothing of
the previous export is removed before step 2); a kill after it leaves a complete new export.
`read_export` follows the manifest and checks the sha256, so it never pairs a JSON with weights
from another export: it reads the file the JSON names, else `<stem>.safetensors` if its content
matches, and re-reads the manifest once in case a concurrent export replaced it mid-read. Exports
written before manifests existed (no `weights_sha256` in the JSON) are read as the plain pair.
A tool that opens `<stem>.safetensors` directly, without the JSON, may see the previous weights for
the moment between steps 2 and 3; the loaders (`mel_vae.load_model`, `RVQ.from_export`) never do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from typing import IO, Any

# Room for the prefix and suffix of a temporary within the usual 255-byte name limit.
_MAX_BASENAME_IN_TEMP = 200
_WEIGHTS_SUFFIX = ".safetensors"
_HASH_CHARS = 16   # 64 bits of sha256 in the file name; the JSON holds the full digest.


def temporary_name(path: str | os.PathLike) -> str:
  """A fresh temporary path in `path`'s folder: `.<basename>.<pid>-<random>.tmp`."""
  folder, base = os.path.split(os.path.abspath(os.fspath(path)))
  return os.path.join(
      folder, f".{base[:_MAX_BASENAME_IN_TEMP]}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path for a writer that wants a path (soundfile, savefig, safetensors).

  On a clean exit the file the writer created there is fsynced and renamed onto `path` (keeping
  the permissions of a file it replaces). On an exception the temporary is removed and the
  exception re-raised; `path` is untouched. The folder of `path` must exist.

  Raises:
    FileNotFoundError: the block exited cleanly without creating the temporary.
  """
  path = os.fspath(path)
  tmp = temporary_name(path)
  try:
    yield tmp
    if not os.path.exists(tmp):
      raise FileNotFoundError(f"{path}: the writer created nothing at {tmp}")
    _fsync_file(tmp)
    _commit(tmp, path)
  except BaseException:
    _remove_quietly(tmp)
    raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
  """Yields a file object on a temporary; on a clean exit it replaces `path` whole.

  `mode` is "w", "wt" or "wb" (appending or updating would need the old content); `open_kwargs`
  go to `open` (encoding, newline, ...). The rules of `atomic_path` apply.
  """
  if mode not in ("w", "wt", "wb"):
    raise ValueError(f"atomic_write writes whole files: mode must be 'w', 'wt' or 'wb', "
                     f"got {mode!r}")
  with atomic_path(path) as tmp:
    # "x": the name is fresh, and a collision must fail rather than share a file.
    with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:
      yield f


def atomic_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
  """Writes `json.dump(obj, f, **dump_kwargs)` to `path` atomically, in UTF-8."""
  # Serialised first, so that an unserialisable value fails before any file is created.
  text = json.dumps(obj, **dump_kwargs)
  with atomic_write(path, "w", encoding="utf-8") as f:
    f.write(text)


def atomic_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_write(path, "wb") as f:
    f.write(data)


# ---------------------------------------------------------------------------------------------
# Weights + JSON exports (see the module docstring).
# ---------------------------------------------------------------------------------------------


def write_export(directory: str | os.PathLike, stem: str, weights: bytes,
                 meta: Mapping[str, Any], **dump_kwargs: Any) -> tuple[str, str]:
  """Writes an export whose JSON names its weights; returns (<stem>.safetensors, <stem>.json).

  `weights` is the serialised safetensors file. The JSON is `meta` plus `weights` (the hashed
  file name) and `weights_sha256`. Readers see the previous export until the JSON's rename, the
  new one after it (`read_export`).
  """
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  digest = hashlib.sha256(weights).hexdigest()
  hashed_name = f"{stem}-{digest[:_HASH_CHARS]}{_WEIGHTS_SUFFIX}"
  hashed = os.path.join(directory, hashed_name)
  if not _sha256_matches(hashed, digest):
    atomic_bytes(hashed, weights)
  meta_path = os.path.join(directory, stem + ".json")
  atomic_json(meta_path, dict(meta, weights=hashed_name, weights_sha256=digest), **dump_kwargs)
  public = os.path.join(directory, stem + _WEIGHTS_SUFFIX)
  _link_or_copy(hashed, public)
  for old in glob.glob(os.path.join(glob.escape(directory), f"{glob.escape(stem)}-*"
                                    f"{_WEIGHTS_SUFFIX}")):
    if os.path.basename(old) != hashed_name and _is_hashed_name(os.path.basename(old), stem):
      _remove_quietly(old)
  return public, meta_path


def read_export(path: str | os.PathLike, stem: str) -> tuple[bytes, dict[str, Any], str]:
  """(weights bytes, JSON, JSON path) of the export at `path` written by `write_export`.

  `path` is the export's folder, its JSON, `<stem>.safetensors` or the hashed weights file.

  Raises:
    FileNotFoundError: no JSON, or no weights file that the JSON names.
    ValueError: the weights on disk are not the ones the JSON names (sha256 differs).
  """
  meta_path = manifest_path(path, stem)
  for attempt in range(2):
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    base = meta_path.removesuffix(".json")
    digest = meta.get("weights_sha256")
    if digest is None:   # An export from before manifests: the plain pair.
      with open(base + _WEIGHTS_SUFFIX, "rb") as f:
        return f.read(), meta, meta_path
    candidates = [os.path.join(os.path.dirname(meta_path), meta["weights"]), base + _WEIGHTS_SUFFIX]
    for candidate in candidates:
      data = _read_if_exists(candidate)
      if data is not None and hashlib.sha256(data).hexdigest() == digest:
        return data, meta, meta_path
    if attempt == 0:
      continue   # A concurrent export may have replaced the JSON and removed our weights.
    if not any(os.path.exists(c) for c in candidates):
      raise FileNotFoundError(f"{meta_path} names weights {meta['weights']}, which are missing")
  raise ValueError(f"{meta_path}: no weights file with the sha256 it names ({digest[:16]}...); "
                   f"looked at {candidates}")


def manifest_path(path: str | os.PathLike, stem: str) -> str:
  """The JSON of the export that `path` (folder, JSON or either weights file) belongs to."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return os.path.join(path, stem + ".json")
  base = path.removesuffix(_WEIGHTS_SUFFIX).removesuffix(".json")
  folder, name = os.path.split(base)
  if _is_hashed_name(name + _WEIGHTS_SUFFIX, stem):
    base = os.path.join(folder, stem)
  return base + ".json"


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def _commit(tmp: str, path: str) -> None:
  try:
    os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
  except FileNotFoundError:
    pass
  os.replace(tmp, path)
  _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_file(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_dir(folder: str) -> None:
  # Makes the rename itself durable; some filesystems cannot fsync a folder, and the old-or-new
  # guarantee does not depend on it.
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _read_if_exists(path: str) -> bytes | None:
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    return None


def _sha256_matches(path: str, digest: str) -> bool:
  data = _read_if_exists(path)
  return data is not None and hashlib.sha256(data).hexdigest() == digest


def _is_hashed_name(name: str, stem: str) -> bool:
  return re.fullmatch(re.escape(stem) + rf"-[0-9a-f]{{{_HASH_CHARS}}}" + re.escape(_WEIGHTS_SUFFIX),
                      name) is not None


def _link_or_copy(source: str, path: str) -> None:
  """Atomically makes `path` hold `source`'s content: a hard link where the filesystem allows."""
  tmp = temporary_name(path)
  try:
    try:
      os.link(source, tmp)
    except OSError:   # No hard links here (some network and FUSE filesystems).
      shutil.copyfile(source, tmp)
      _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
  except BaseException:
    _remove_quietly(tmp)
    raise
