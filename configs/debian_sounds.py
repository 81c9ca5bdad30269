"""Real recorded sounds (Debian sample packages), captioned from file names: build and look.

  apt-get install sonic-pi-samples lmms-common hydrogen-data
  python -m almtok.build_data --config=configs/debian_sounds.py --workdir=/tmp/debian
"""

import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, max_seconds=10.0)
  config = ml_collections.ConfigDict()
  config.dataset = dict(name="debian_sounds", sample_rate=16_000, max_seconds=arg.max_seconds)
  config.data_dir = ""  # Empty: <workdir>/tfds.
  config.show = dict(split="validation", num_examples=6)
  config.lock()
  return config
