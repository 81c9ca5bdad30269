"""Config arg parsing, range checks, and one-line start-up errors from the command line."""

import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
from flax import nnx
import pytest

from almtok import configlib
from almtok import models
from almtok import objective
from almtok import optim
from almtok import sample
from almtok import state as state_lib
from almtok import tokenizers
from almtok import train
from almtok.models import audio_lm
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


def _docstring_commands(path: str, module: str) -> list[list[str]]:
  """The `python -m <module> ...` commands of a config file's docstring, as argv lists
  (continuation lines joined)."""
  spec = importlib.util.spec_from_file_location("cfg", path)
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  return _commands(config_module.__doc__ or "", module)


def _commands(docstring: str, module: str) -> list[list[str]]:
  """The `python -m <module> ...` commands of a docstring, as argv lists."""
  text = re.sub(r"\\\n\s*", " ", docstring)
  return [shlex.split(line.strip())[2:] for line in text.splitlines()
          if line.strip().startswith(f"python -m {module} ")]


def _parse_from_root(program: str, argv: list[str], flag_values: flags.FlagValues) -> None:
  """configlib.parse_flags as a user runs it, from the repository root (relative paths)."""
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    configlib.parse_flags([program, *argv], flag_values)
  finally:
    os.chdir(cwd)


EXPERIMENTS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                     if _docstring_commands(p, "almtok.train"))


def test_the_lm_experiment_configs_are_known():
  assert [os.path.basename(p) for p in EXPERIMENTS] == ["paper.py", "synth_small.py"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_train_command_parses_and_builds_every_block(path):
  # Each `python -m almtok.train` command of the docstring, parsed by the trainer's own flags
  # from the repository root; the config it gives passes the trainer's checks and builds its
  # model (shapes only), optimizer, noise schedule, loss settings and sampler settings.
  for argv in _docstring_commands(path, "almtok.train"):
    flag_values = flags.FlagValues()
    train.define_flags(flag_values, argv=["train", *argv])
    _parse_from_root("train", argv, flag_values)
    config = flag_values.config
    assert flag_values.workdir and config.data.latents_dir, argv
    objective.check_config(config)
    configlib.validate(config)
    model = models.abstract(config)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if config.paper_params:
      assert abs(params / config.paper_params - 1) < 0.03, (argv, params)
    optim.make_optimizer(config.train)
    state_lib.make_schedule(config)
    audio_lm.LossConfig.from_config(config.loss)
    sample.settings_from_config(config)
    assert tokenizers.spec(config.tokenizer).latent_dim == objective.token_dim(config)


def test_a_family_of_runs_is_one_config_with_arguments():
  from configs import paper, synth_small  # pylint: disable=g-import-not-at-top
  demo, dlm = synth_small.get_config(None), synth_small.get_config("arm=discrete")
  assert (demo.model_name, dlm.model_name) == ("continuous_lm", "discrete_lm")
  # MNTP defaults by arm (on for the continuous LM, off as in AudioGen) and can be set.
  assert (demo.loss.mntp_weight, dlm.loss.mntp_weight) == (1.0, 0.0)
  assert synth_small.get_config("mntp=false").loss.mntp_weight == 0.0
  assert synth_small.get_config("arm=discrete,pattern=parallel,mntp=true").loss.mntp_weight == 1.0
  # The arms share everything that is not the tokens and the heads.
  for block in ("data", "train", "mesh"):
    assert demo[block].to_dict() == dlm[block].to_dict(), block
  base, disc = paper.get_config("base"), paper.get_config("base,arm=discrete")
  assert base.data.to_dict() == disc.data.to_dict() and base.dtype == disc.dtype == "bfloat16"
  for arg, message in (("arm=bogus", "config arg arm='bogus': choose one of"),
                       ("mntp=maybe", "config arg mntp='maybe': choose one of")):
    with pytest.raises(ValueError, match=message):
      synth_small.get_config(arg)


def test_every_evaluate_command_parses():
  # `python -m almtok.evaluate` commands of its docstring, parsed by its own flags from the
  # repository root: with a run, with another system's files and a dataset config, --compare.
  from almtok import evaluate  # pylint: disable=g-import-not-at-top
  commands = _commands(evaluate.__doc__, "almtok.evaluate")
  assert len(commands) == 4
  for argv in commands:
    flag_values = flags.FlagValues()
    evaluate.define_flags(flag_values, argv=["evaluate", *argv])
    _parse_from_root("evaluate", argv, flag_values)
    assert flag_values.out, argv
    if flag_values.generated_dir:
      assert flag_values.dataset.dataset.name == "synth_sounds"
    else:
      assert flag_values.dataset is None   # An optional config file, not given.
