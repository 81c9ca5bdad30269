r"""The CPU demo: a small LM on the synthetic set's `mel` latents, the continuous LM (the default)
or, with `arm=discrete`, the discrete baseline on RVQ codes of the same latents with the same
data, optimisation and sizes. Every key of the run is set on this page; only the size tables
come from configs/continuous_lm.py and configs/discrete_lm.py.

  python -m almtok.prepare --config=configs/prepare.py:synth_sounds,tokenizer=mel \
      --workdir=/tmp/prep
  python -m almtok.plan --config=configs/synth_small.py --num_devices=1
  python -m almtok.train --config=configs/synth_small.py --workdir=/tmp/lm \
      --config.data.latents_dir=/tmp/prep/latents
  python -m almtok.generate --workdir=/tmp/lm --held_out=4 --seconds=4 --out=/tmp/samples
  python -m almtok.evaluate --workdir=/tmp/lm --tagger=experiments/evaluation/tagger \
      --out=/tmp/eval

The discrete arm, on an RVQ fitted to the same latents:

  python -m almtok.quantizers.rvq --config=configs/rvq.py --workdir=/tmp/rvq \
      --config.latents_dir=/tmp/prep/latents
  python -m almtok.train --config=configs/synth_small.py:arm=discrete,quantizer=/tmp/rvq \
      --workdir=/tmp/dlm --config.data.latents_dir=/tmp/prep/latents

Args: `arm` (continuous, discrete), `size` (a size of configs/continuous_lm.py or
configs/discrete_lm.py), `tokenizer`, `steps`, `minutes` (time budget, 0: none), `mntp` (auto:
on for continuous, off for discrete as in AudioGen; true, false), `batch`, `seconds` (the
training context), `seed`; the discrete arm's codes: `n_q`, `k` and `pattern` (as the fitted
RVQ; MNTP on codes needs `pattern=parallel`) and `quantizer` (its export directory).
"""

import ml_collections

from almtok import sharding
from almtok import tokenizers
from configs import common
from configs import continuous_lm
from configs import discrete_lm

ARMS = ("continuous", "discrete")


def get_config(arg=None):
  arg = common.parse_arg(arg, arm="continuous", size="small", tokenizer="mel", steps=450,
                         minutes=0.0, mntp="auto", batch=32, seconds=4.0, seed=0, n_q=4, k=1024,
                         pattern="delay", quantizer="")
  arm = common.choice("arm", arg.arm, ARMS)
  mntp = common.switch("mntp", arg.mntp, auto=arm == "continuous")
  tok = tokenizers.spec(arg.tokenizer)
  max_len = int(round(arg.seconds * tok.frame_rate))
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.model_name = f"{arm}_lm"
  config.tokenizer = arg.tokenizer
  config.seconds = arg.seconds

  # --- Model ------------------------------------------------------------------------------------
  decoder = dict(mlp_ratio=4.0, mlp="gelu", rope_base=10_000.0,
                 remat="none",        # Or "full", "dots" (decoder.REMAT_POLICIES).
                 scan_layers=False)   # True: one scanned stack (decoder.Decoder).
  if arm == "continuous":
    size = common.preset(continuous_lm.MODELS, arg.size)
    config.model = dict(
        token_dim=tok.latent_dim, max_len=max_len,
        text_dim=384,    # MiniLM-L6 width.
        text_len=32,     # Text token slots; the prefix adds the pooled sentence vector.
        decoder=dict(width=size["width"], num_layers=size["num_layers"],
                     num_heads=size["num_heads"], **decoder),
        head=dict(width=size["head_width"], depth=size["head_depth"]))
    config.paper_params = continuous_lm.PAPER_PARAMS.get(arg.size, 0.0)  # 0: no figure.
  else:
    size = common.preset(discrete_lm.MODELS, arg.size)
    config.model = dict(
        num_codebooks=arg.n_q, codebook_size=arg.k,
        max_len=max_len,  # Frames; the delay pattern adds n_q - 1 steps.
        text_dim=384, text_len=32,
        decoder=dict(width=size["width"], num_layers=size["num_layers"],
                     num_heads=size["num_heads"], **decoder),
        pattern=arg.pattern)
    # The RVQ that makes the codes (`python -m almtok.quantizers.rvq` on the training latents;
    # its n_q and k are the model's); the train step encodes the normalized latents with it.
    config.quantizer = dict(path=arg.quantizer, dim=tok.latent_dim)
    config.paper_params = discrete_lm.PAPER_PARAMS.get(arg.size, 0.0)
  config.dtype = "float32"        # Compute dtype; parameters are always float32.
  # Parameter partitioning: (path glob, mesh axis per dimension), first match wins
  # (almtok/sharding.py).
  config.sharding_rules = sharding.PARAM_RULES

  # --- Objective and sampling -------------------------------------------------------------------
  config.loss = dict(
      cfg_dropout=0.1,
      mntp_weight=1.0 if mntp else 0.0,
      # Drop-ratio mixture rows (weight, alpha, beta): a high-ratio mode (mean 0.73) and a
      # low-ratio mode (mean 0.2).
      drop_mixture=((0.5, 4.0, 1.5), (0.5, 1.5, 6.0)))
  if arm == "continuous":
    # v prediction: after a few hundred steps an eps-predicting head is still imprecise at the
    # noisiest steps, where x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) multiplies its error by up
    # to 1/sqrt(ab) ~ 2e4, and the reverse chain diverges; x0 from v has no such gain. One noise
    # draw per token (MAR uses 4) keeps the CPU demo's head cost down.
    config.diffusion = dict(schedule="cosine", timesteps=1000, prediction="v", batch_mul=1)
    # How to sample (`sample.SamplerSettings`; the trainer's periodic samples, `generate` and
    # the notebook read this block): guidance 3 from the first token on, temperature 1, x0
    # within the data's per-channel range and dynamically thresholded at 3 sigma
    # (experiments/sampling/levels.md).
    config.sample = dict(
        solver_steps=100, solver="ddpm", eta=0.0, cfg_scale=3.0, cfg_schedule="constant",
        temperature=1.0, clip_x0=3.0, threshold=0.99, data_range=True)
  else:
    # `sample.CodeSamplerSettings`: AudioGen's top-k 250 and guidance 3 on logits.
    config.sample = dict(cfg_scale=3.0, cfg_schedule="constant", temperature=1.0, top_k=250,
                         top_p=0.0)

  # --- Data, optimisation, logging, mesh --------------------------------------------------------
  config.data = dict(
      latents_dir="", seq_len=max_len, batch_size=arg.batch, worker_count=0,
      text_cache=100_000)  # Captions whose frozen MiniLM embedding is kept in host memory.
  config.train = dict(
      num_steps=arg.steps, max_minutes=arg.minutes,
      learning_rate=2e-3, warmup_steps=50, final_lr_fraction=0.05, weight_decay=0.02,
      b1=0.9, b2=0.95, grad_clip=1.0, ema_decay=0.995, ema_warmup=True, grad_accum=1,
      log_every=20, checkpoint_every=250, keep_checkpoints=2,
      eval_every=250, eval_batches=4, peak_flops=0.0,
      # Generated clips in TensorBoard (with config.sample): every N steps (0: never; by
      # default the last step), for this many validation captions.
      sample_every=arg.steps, sample_captions=2)
  config.mesh = dict(data=-1, fsdp=1)
  config.lock()
  return config
