"""The embedded synthetic captioned-sounds dataset: build it and look at it.

  python -m almtok.build_data --config=configs/synth_sounds.py --workdir=/tmp/synth
  python -m almtok.build_data --config=configs/synth_sounds.py:tiny --workdir=/tmp/synth_tiny
  python -m almtok.build_data --config=configs/synth_sounds.py:default,seconds=10.0 ...

Presets set the split sizes; `seconds` and `seed` are args too.
"""

import ml_collections

from configs import common

SIZES = {
    "default": dict(num_train=2000, num_validation=200, num_test=200),
    "small": dict(num_train=400, num_validation=40, num_test=40),
    "tiny": dict(num_train=16, num_validation=4, num_test=4),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=SIZES, preset="default", seconds=4.0, seed=0)
  config = ml_collections.ConfigDict()
  config.dataset = dict(name="synth_sounds", seconds=arg.seconds, sample_rate=16_000,
                        seed=arg.seed, **common.preset(SIZES, arg.preset))
  config.data_dir = ""  # Empty: <workdir>/tfds.
  config.show = dict(split="validation", num_examples=6)
  config.lock()
  return config
