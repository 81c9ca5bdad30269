r"""Residual VQ codebooks over prepared latents: the discrete baseline's tokenizer.

  python -m almtok.quantizers.rvq --config=configs/rvq.py --workdir=/tmp/rvq \
      --config.latents_dir=/tmp/synth/latents
  python -m almtok.quantizers.rvq --config=configs/rvq.py:large,latents_dir=/tmp/ac/latents \
      --workdir=/tmp/rvq_large

Presets set Q (`n_q`), K (`k`), Lloyd iterations per stage and the size of the train-split
sample that k-means runs on; `tiny` is for tests. Args: `latents_dir` (the prepare workdir's
`latents/`), `seed`. Any field can be overridden with `--config.<field>=...`.
"""

import ml_collections

from configs import common

PRESETS = {
    "tiny": dict(n_q=2, k=16, iters=3, num_vectors=512),
    "default": dict(n_q=4, k=1024, iters=20, num_vectors=50_000),
    "large": dict(n_q=8, k=1024, iters=20, num_vectors=100_000),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=PRESETS, preset="default", latents_dir="", seed=0)
  config = ml_collections.ConfigDict(common.preset(PRESETS, arg.preset))
  config.latents_dir = arg.latents_dir  # <prepare workdir>/latents; required.
  config.seed = arg.seed                # Sample of train vectors and k-means draws.
  config.init = "kmeans++"              # Or "random": k distinct train vectors.
  config.chunk = 4096                   # Vectors per distance computation (memory: chunk x k).
  config.eval_split = "validation"      # Reported relative error; empty: none.
  config.lock()
  return config
