r"""The CPU demo: the `small` continuous LM on the synthetic set's `mel` latents.

  python -m almtok.prepare --config=configs/prepare.py:synth_sounds,tokenizer=mel \
      --workdir=/tmp/prep
  python -m almtok.train --config=configs/synth_small.py --workdir=/tmp/lm \
      --config.data.latents_dir=/tmp/prep/latents

Args: `size` (a continuous_lm preset), `tokenizer`, `steps`, `minutes` (time budget, 0: none),
`mntp` (False trains NTP only), `batch`, `seconds` (the training context), `seed`.
"""

import ml_collections

from configs import common
from configs import continuous_lm


def get_config(arg=None):
  arg = common.parse_arg(arg, size="small", tokenizer="mel", steps=450, minutes=0.0, mntp=True,
                         batch=32, seconds=4.0, seed=0)
  config = continuous_lm.get_config(f"{arg.size},tokenizer={arg.tokenizer},"
                                    f"seconds={arg.seconds},seed={arg.seed}")
  config.unlock()
  add_training(config, arg)
  config.loss.mntp_weight = 1.0 if arg.mntp else 0.0
  config.diffusion.batch_mul = 1  # MAR uses 4; 1 keeps the CPU demo's head cost down.
  # v prediction: after a few hundred steps an eps-predicting head is still imprecise at the
  # noisiest steps, where x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) multiplies its error by up to
  # 1/sqrt(ab) ~ 2e4, and the reverse chain diverges; x0 from v has no such gain.
  config.diffusion.prediction = "v"
  # The demo's clips: guidance 3 from the first token on, temperature 1, x0 within the data's
  # per-channel range and dynamically thresholded at 3 sigma (experiments/sampling/levels.md).
  config.sample.update(cfg_schedule="constant", threshold=0.99, clip_x0=3.0)
  config.lock()
  return config


def add_training(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
  """The demo's data, optimisation, logging and mesh blocks (shared with the discrete baseline's
  `configs/synth_small_discrete.py`), from `arg`'s steps, minutes and batch."""
  config.data = ml_collections.ConfigDict(dict(
      latents_dir="", seq_len=config.model.max_len, batch_size=arg.batch, worker_count=0,
      text_cache=100_000))  # Captions whose frozen MiniLM embedding is kept in host memory.
  config.train = ml_collections.ConfigDict(dict(
      num_steps=arg.steps, max_minutes=arg.minutes,
      learning_rate=2e-3, warmup_steps=50, final_lr_fraction=0.05, weight_decay=0.02,
      b1=0.9, b2=0.95, grad_clip=1.0, ema_decay=0.995, ema_warmup=True, grad_accum=1,
      log_every=20, checkpoint_every=250, keep_checkpoints=2,
      eval_every=250, eval_batches=4, peak_flops=0.0,
      # Generated clips in TensorBoard (with config.sample): every N steps (0: never; by
      # default the last step), for this many validation captions.
      sample_every=arg.steps, sample_captions=2))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
