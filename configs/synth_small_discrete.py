r"""The discrete baseline beside the CPU demo: the same latents, data, optimisation and sizes as
`configs/synth_small.py`, on RVQ codes of those latents.

  python -m almtok.quantizers.rvq --config=configs/rvq.py --workdir=/tmp/rvq \
      --config.latents_dir=/tmp/prep/latents
  python -m almtok.train --config=configs/synth_small_discrete.py:quantizer=/tmp/rvq \
      --workdir=/tmp/dlm --config.data.latents_dir=/tmp/prep/latents

Args: `size` (a discrete_lm preset), `tokenizer`, `n_q`, `k` and `pattern` (as the fitted RVQ),
`quantizer` (its export directory), `steps`, `minutes`, `mntp` (needs pattern=parallel),
`batch`, `seconds`, `seed`.
"""

from configs import common
from configs import discrete_lm
from configs import synth_small


def get_config(arg=None):
  arg = common.parse_arg(arg, size="small", tokenizer="mel", n_q=4, k=1024, pattern="delay",
                         quantizer="", steps=450, minutes=0.0, mntp=False, batch=32, seconds=4.0,
                         seed=0)
  config = discrete_lm.get_config(f"{arg.size},tokenizer={arg.tokenizer},seconds={arg.seconds},"
                                  f"n_q={arg.n_q},k={arg.k},pattern={arg.pattern},seed={arg.seed}")
  config.unlock()
  synth_small.add_training(config, arg)
  config.quantizer.path = arg.quantizer
  config.loss.mntp_weight = 1.0 if arg.mntp else 0.0
  config.lock()
  return config
