r"""The discrete-token baseline (AudioGen-style): RVQ codes of the same latents, the same decoder
and text prefix as the continuous LM, one softmax head per codebook.

  python -m almtok.param_count --config=configs/discrete_lm.py:base
  python -m almtok.param_count --config=configs/discrete_lm.py:large,pattern=parallel

Presets: `base` (285M) and `large` (1B) are AudioGen's sizes, `small` matches the continuous
`small` in parameters (within 5%, counted the same way), `tiny` is the test size. AudioGen's
decoder cross-attends to T5 states; this one reads the same prefix as the continuous LM, so its
shapes are chosen here to reach AudioGen's parameter counts (not taken from AudioGen): base
22 x 1024 (16 heads), large 35 x 1536 (24 heads). Parameter counts exclude the frozen text
encoder and the quantizer's codebooks (data, not parameters).

Args: `n_q` and `k` (codebooks and codes per codebook: those of the fitted RVQ, see
`python -m almtok.quantizers.rvq`), `pattern` (`delay` or `parallel`), `tokenizer`, `seconds`,
`mlp`, `seed`. Training reads `config.quantizer.path`, the RVQ export directory.
"""

import ml_collections

from almtok import sharding
from almtok import tokenizers
from configs import common

# Decoder (width, layers, heads) per size.
MODELS = {
    "tiny": dict(width=64, num_layers=2, num_heads=4),
    "small": dict(width=128, num_layers=4, num_heads=4),
    "base": dict(width=1024, num_layers=22, num_heads=16),
    "large": dict(width=1536, num_layers=35, num_heads=24),
}
# Parameter counts AudioGen reports for its sizes (its text encoder not included).
PAPER_PARAMS = {"base": 285e6, "large": 1e9}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=MODELS, preset="base", tokenizer="mel_vae", seconds=10.0,
                         n_q=4, k=1024, pattern="delay", mlp="gelu", seed=0)
  size = common.preset(MODELS, arg.preset)
  tok = tokenizers.spec(arg.tokenizer)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.model_name = "discrete_lm"
  config.tokenizer = arg.tokenizer
  config.seconds = arg.seconds
  config.model = dict(
      num_codebooks=arg.n_q,
      codebook_size=arg.k,
      max_len=int(round(arg.seconds * tok.frame_rate)),   # Frames; steps add n_q - 1 (delay).
      text_dim=384,    # MiniLM-L6 width.
      text_len=32,     # Text token slots; the prefix adds the pooled sentence vector.
      decoder=dict(width=size["width"], num_layers=size["num_layers"],
                   num_heads=size["num_heads"], mlp_ratio=4.0, mlp=arg.mlp, rope_base=10_000.0,
                   remat="none",       # Or "full", "dots" (decoder.REMAT_POLICIES).
                   scan_layers=False),  # True: one scanned stack (decoder.Decoder).
      pattern=arg.pattern,
  )
  # The RVQ that makes the codes: an export directory of `almtok.quantizers.rvq` fitted on the
  # training latents (its n_q and k must be the model's). Training encodes the normalized
  # latents the continuous arm reads with it, on the device, inside the train step.
  config.quantizer = dict(path="", dim=tok.latent_dim)   # dim: the latent channels it codes.
  config.paper_params = PAPER_PARAMS.get(arg.preset, 0.0)   # 0: no published figure.
  config.dtype = "float32"        # Compute dtype; parameters are always float32.
  config.sharding_rules = sharding.PARAM_RULES
  # How to sample (`sample.CodeSamplerSettings`): AudioGen's top-k 250, guidance 3 on logits.
  config.sample = dict(cfg_scale=3.0, cfg_schedule="constant", temperature=1.0, top_k=250,
                       top_p=0.0)
  config.loss = dict(
      cfg_dropout=0.1,
      # MNTP on codes (frames dropped with all their codebooks): off, as in AudioGen; an
      # experiment may turn it on with the parallel pattern.
      mntp_weight=0.0,
      drop_mixture=((0.5, 4.0, 1.5), (0.5, 1.5, 6.0)),
  )
  config.lock()
  return config
