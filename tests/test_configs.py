"""Config arg parsing, range checks, and one-line start-up errors from the command line."""

import glob
import importlib.util
import os
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from almtok import configlib
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg_presets_overrides_and_types():
  arg = common.parse_arg("small,seed=3,seconds=2,fast", presets={"tiny": {}, "small": {}},
                         preset="tiny", seed=0, seconds=4.0, fast=False, name="x")
  assert (arg.preset, arg.seed, arg.seconds, arg.fast, arg.name) == ("small", 3, 2.0, True, "x")
  assert isinstance(arg.seconds, float)
  assert common.parse_arg(None, seed=1).seed == 1
  assert common.parse_arg("fast=false", fast=True).fast is False


@pytest.mark.parametrize("arg,match", [
    ("huge", "not a preset"), ("sede=3", "'sede': unknown key"), ("seed=abc", "expected int"),
    ("seed=1.5", "expected int"), ("fast=maybe", "expected a boolean")])
def test_parse_arg_errors_name_the_key(arg, match):
  with pytest.raises(ValueError, match=match):
    common.parse_arg(arg, presets={"tiny": {}}, preset="tiny", seed=0, fast=False)


def test_validate_names_the_key():
  config = ml_collections.ConfigDict({"data": {"seconds": 4.0, "seed": 0},
                                      "model": {"num_layers": 2, "cfg_dropout": 0.1}})
  configlib.validate(config)
  config.model.num_layers = 0
  with pytest.raises(configlib.ConfigError, match=r"config.model.num_layers=0: must be an integer"):
    configlib.validate(config)
  config.model.num_layers = 2
  config.model.cfg_dropout = 1.5
  with pytest.raises(configlib.ConfigError, match="cfg_dropout"):
    configlib.validate(config)
  config.model.cfg_dropout = 0.1
  with pytest.raises(configlib.ConfigError, match=r"config.data.seed=0: must be one of \[1\]"):
    configlib.validate(config, choices={"data.seed": (1,)})


def _config_files():
  return sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                if os.path.basename(p) not in ("__init__.py", "common.py"))


@pytest.mark.parametrize("path", _config_files(), ids=os.path.basename)
def test_every_config_loads_locked_and_valid(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(None)
  assert config.is_locked
  configlib.validate(config)
  with pytest.raises((AttributeError, KeyError)):
    config.no_such_key = 1


def _run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "almtok.build_data", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)


BAD_FLAGS = [
    (["--config=configs/synth_sounds.py:tiny", "--config.dataset.bogus=3"],
     "error: --config.dataset.bogus: the config has no key 'bogus'"),
    (["--config=configs/synth_sounds.py:huge"], "error: ValueError: config arg 'huge'"),
    (["--config=configs/missing.py"], "error: --config=configs/missing.py: "),
]


@pytest.mark.parametrize("args,expected", BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_exit_status_2(capsys, args, expected):
  # What `configlib.run` parses an entry point's flags with, on flags defined as build_data's.
  argv = ["build_data", *args, "--workdir=/nonexistent"]
  flag_values = flags.FlagValues()
  # The config flag reads its `--config.*` overrides from the command line (sys.argv).
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  with pytest.raises(SystemExit) as e:
    configlib.parse_flags(argv, flag_values)
  assert e.value.code == 2
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith(expected), lines


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/synth_sounds.py:tiny", "--config.dataset.seconds=-1"],
     "error: config.dataset.seconds=-1.0: must be a number of seconds in (0, 600]"),
])
def test_cli_bad_config_fails_in_one_line(tmp_path, args, expected):
  # The program end to end, on a value that only its main's check refuses (the bad flags above
  # take the same way out, through `configlib.run`).
  result = _run_cli(*args, f"--workdir={tmp_path}")
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith(expected), result.stderr
  assert "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)  # Nothing was started.
