r"""The continuous-token audio LM (causal decoder + token-wise diffusion head + MNTP).

  python -m almtok.param_count --config=configs/continuous_lm.py:base
  python -m almtok.param_count --config=configs/continuous_lm.py:large,tokenizer=mel

Presets: `base` (24 x 768, 193M) and `large` (32 x 1024, 462M) are the paper's sizes; `small`
is the CPU demo size and `tiny` the test size. Parameter counts exclude the frozen text encoder.
"""

import ml_collections

from almtok import sharding
from almtok import tokenizers
from configs import common

# Decoder (width, layers, heads) and diffusion head (width, depth) per size.
MODELS = {
    "tiny": dict(width=64, num_layers=2, num_heads=4, head_width=64, head_depth=2),
    "small": dict(width=128, num_layers=4, num_heads=4, head_width=256, head_depth=2),
    "base": dict(width=768, num_layers=24, num_heads=12, head_width=1024, head_depth=3),
    "large": dict(width=1024, num_layers=32, num_heads=16, head_width=1280, head_depth=6),
}
# Parameter counts the paper reports for its sizes (the text encoder not included).
PAPER_PARAMS = {"base": 193e6, "large": 462e6}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=MODELS, preset="base", tokenizer="mel_vae", seconds=10.0,
                         mlp="gelu", seed=0)
  size = common.preset(MODELS, arg.preset)
  tok = tokenizers.spec(arg.tokenizer)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.model_name = "continuous_lm"
  config.tokenizer = arg.tokenizer
  config.seconds = arg.seconds
  config.model = dict(
      token_dim=tok.latent_dim,
      max_len=int(round(arg.seconds * tok.frame_rate)),
      text_dim=384,    # MiniLM-L6 width.
      text_len=32,     # Text token slots; the prefix adds the pooled sentence vector.
      decoder=dict(width=size["width"], num_layers=size["num_layers"],
                   num_heads=size["num_heads"], mlp_ratio=4.0, mlp=arg.mlp, rope_base=10_000.0,
                   # Or "full", "dots" (decoder.REMAT_POLICIES); any policy but "none" also
                   # runs the head's noise draws one at a time, recomputed (diffusion.py).
                   remat="none",
                   scan_layers=False),  # True: one scanned stack (decoder.Decoder).
      head=dict(width=size["head_width"], depth=size["head_depth"]),
  )
  config.paper_params = PAPER_PARAMS.get(arg.preset, 0.0)   # 0: no published figure.
  config.dtype = "float32"        # Compute dtype; parameters are always float32.
  # Parameter partitioning: (path glob, mesh axis per dimension), first match wins (see
  # almtok/sharding.py); an experiment may replace them, e.g. to shard embeddings differently.
  config.sharding_rules = sharding.PARAM_RULES
  # What the head is trained with; sampling takes the prediction type from here.
  config.diffusion = dict(schedule="cosine", timesteps=1000, prediction="eps", batch_mul=4)
  # How to sample (`sample.SamplerSettings`): the trainer's periodic samples, `generate` (the
  # run's own block, with --config.sample.* on top) and the notebook all read this block.
  config.sample = dict(
      solver_steps=100, solver="ddpm", eta=0.0, cfg_scale=3.0, cfg_schedule="linear",
      temperature=1.0, clip_x0=5.0, threshold=ml_collections.config_dict.placeholder(float),
      data_range=True)
  config.loss = dict(
      cfg_dropout=0.1,
      mntp_weight=1.0,
      # Drop-ratio mixture rows (weight, alpha, beta): a high-ratio mode (mean 0.73) and a
      # low-ratio mode (mean 0.2).
      drop_mixture=((0.5, 4.0, 1.5), (0.5, 1.5, 6.0)),
  )
  config.lock()
  return config
