"""Helpers shared by the experiment configs.

A config file is named on the command line as `--config=configs/x.py[:arg]`, where `arg` is a
comma-separated list of a preset name and `key=value` overrides, for example
`configs/continuous_lm.py:small,seed=3`. `parse_arg` turns that string into typed values.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import ml_collections


def parse_arg(arg: str | None, presets: Mapping[str, Any] | None = None,
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `preset,key=value,...` into a ConfigDict of `defaults` with overrides applied.

  A bare word is the preset name (stored under `preset`, which must be one of `presets` when
  they are given) or, if it names a boolean default, sets that flag to True. `key=value` sets
  `key`, cast to the type of its default. Unknown keys, unknown presets and values that do not
  cast fail here, naming what is wrong.
  """
  values = dict(defaults)
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, sep, raw = token.partition("=")
    key = key.strip()
    if not sep:
      if isinstance(values.get(key), bool):
        values[key] = True
      elif presets is not None and key in presets:
        values["preset"] = key
      else:
        known = sorted(presets) if presets else []
        raise ValueError(f"config arg {token!r}: not a preset {known} nor a boolean option")
    elif key not in values:
      raise ValueError(f"config arg {key!r}: unknown key; known keys are {sorted(values)}")
    else:
      values[key] = _cast(key, raw.strip(), values[key])
  if presets is not None and values.get("preset") not in presets:
    raise ValueError(f"config arg: preset {values.get('preset')!r} is not one of {sorted(presets)}")
  return ml_collections.ConfigDict(values)


def _cast(key: str, raw: str, default: Any) -> Any:
  if isinstance(default, bool):
    if raw.lower() in ("1", "true", "yes"):
      return True
    if raw.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"config arg {key}={raw!r}: expected a boolean")
  if default is None or isinstance(default, str):
    return raw
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"config arg {key}={raw!r}: expected {type(default).__name__}") from e
  if isinstance(default, float) and isinstance(value, int):
    value = float(value)
  if not isinstance(value, type(default)):
    raise ValueError(f"config arg {key}={raw!r}: expected {type(default).__name__}")
  return value


def preset(table: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
  """A copy of the named entry of a size-preset table."""
  if name not in table:
    raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
  return dict(table[name])


def choice(key: str, value: str, allowed) -> str:
  """`value` if it is one of `allowed`; a ValueError naming the config arg `key` otherwise."""
  if value not in allowed:
    raise ValueError(f"config arg {key}={value!r}: choose one of {list(allowed)}")
  return value


def switch(key: str, value: str, auto: bool) -> bool:
  """A switch whose default depends on the rest of the config: `auto` for 'auto', else 'true'
  or 'false'."""
  value = choice(key, value.lower(), ("auto", "true", "false"))
  return auto if value == "auto" else value == "true"
