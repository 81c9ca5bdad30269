"""Config checks and the start-up shared by every entry point.

Configs are locked `ml_collections.ConfigDict`s, so a misspelt `--config.x.y=...` already fails
while flags are parsed. `validate` adds range checks, kept here as data: each rule is a glob over
dotted config paths, a predicate, and what the value must be. `run` starts an absl main and turns
any `ConfigError` into a single line on stderr and exit status 2, before any work starts.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags


class FatalError(Exception):
  """An error that an entry point reports as one line (exit status 2), without a traceback."""


class ConfigError(FatalError, ValueError):
  """A config or flag value that cannot be used; the message names the key."""


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# (glob over the dotted path, predicate, what the value must be). First matching rule wins.
RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("*seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("*num_validation", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("*num_test", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("*num_train", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*num_examples", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("*sample_rate", lambda v: _is_int(v) and 1000 <= v <= 192_000, "an integer in [1000, 192000]"),
    ("*seconds", lambda v: _is_num(v) and 0 < v <= 600, "a number of seconds in (0, 600]"),
    ("*batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*num_layers", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*num_heads", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*width", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*depth", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    # A zero here would make a run do nothing without a word.
    ("*num_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*timesteps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*solver_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*batch_mul", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*grad_accum", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("*steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("*every", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 turns it off)"),
    ("*dropout", lambda v: _is_num(v) and 0 <= v < 1, "a probability in [0, 1)"),
    ("*prob", lambda v: _is_num(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("*learning_rate", lambda v: _is_num(v) and v > 0, "a number > 0"),
    ("*temperature", lambda v: _is_num(v) and v > 0, "a number > 0"),
    ("*max_examples", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
)


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """Yields (dotted path, value) for every non-dict entry of `config`."""
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, path + ".")
    else:
      yield path, value


def validate(config: ml_collections.ConfigDict,
             choices: dict[str, tuple[Any, ...]] | None = None) -> None:
  """Checks every value against `RULES` and `choices` (path -> allowed values).

  Raises:
    ConfigError: naming the first offending key, its value and what it must be.
  """
  for path, value in leaves(config):
    if choices and path in choices and value not in choices[path]:
      raise ConfigError(f"config.{path}={value!r}: must be one of {list(choices[path])}")
    for pattern, ok, requirement in RULES:
      if fnmatch.fnmatchcase(path, pattern):
        if not ok(value):
          raise ConfigError(f"config.{path}={value!r}: must be {requirement}")
        break


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl flag parsing that reports a bad flag or config override in one line (on stderr, then
  exit status 2)."""
  try:
    remaining = flag_values(argv)
  except (AttributeError, KeyError) as e:
    # A locked ConfigDict refuses an unknown `--config.a.b=...` key; its message quotes the key
    # first (sometimes escaped, sometimes followed by a suggestion).
    match = re.search(r"[A-Za-z_][A-Za-z0-9_]*", str(e))
    key = match.group(0) if match else "?"
    names = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    where = next((n for n in names if n.split(".")[-1] == key),
                 next((n for n in names if key in n), f"--config.*{key}"))
    _fail(f"{where}: the config has no key {key!r}")
  except flags.Error as e:
    # config_flags wraps errors from get_config in a traceback; its last line says what it is.
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    _fail(lines[-1] if lines else type(e).__name__)
  # A config file that fails to load leaves a placeholder that raises on first use: use it now.
  for name in list(flag_values):
    flag = flag_values[name]
    # (An optional config file not given has the value None, and no file name to ask for.)
    if flag.value is not None and hasattr(flag, "config_filename"):
      try:
        flag.value.keys()
      except OSError as e:
        cause = e.__cause__ or e
        reason = [l.strip() for l in str(cause).splitlines() if l.strip()][-1]
        _fail(f"--{name}={config_flags.get_config_filename(flag)}: {reason}")
  return remaining


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` where bad flags, config overrides and `FatalError`s (such as
  `ConfigError`, raised before any work starts) end the program with one line on stderr and
  exit status 2."""

  def guarded(argv):
    try:
      return main(argv)
    except FatalError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=parse_flags)
