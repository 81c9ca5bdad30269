r"""The paper's runs on 10 s clips of AudioCaps + WavCaps latents at a global batch of 2048: the
continuous-token LM with MNTP at Base (193M) and Large (462M), and (`arm=discrete`) the discrete
baseline at AudioGen's sizes, Base (285M) and Large (1B), over RVQ codes of the same latents with
the same data, optimisation and precision, so that the arms differ in the tokens and the heads
only. Every key of a run is set on this page; only the size tables come from
configs/continuous_lm.py and configs/discrete_lm.py.

Prepare the latents once (mel-VAE tokens, 128-d at 25 Hz; one AudioCaps-style CSV per split,
WavCaps rows appended to train.csv), and for the discrete arm fit the RVQ on them:

  python -m almtok.prepare --config=configs/prepare.py:audiocaps,tokenizer=mel_vae,\
tokenizer_path=/mnt/almtok/mel_vae,audio_dir=/mnt/data/audio,csv_dir=/mnt/data/csv,max_seconds=10 \
      --workdir=/mnt/almtok/prep
  python -m almtok.quantizers.rvq --config=configs/rvq.py:latents_dir=/mnt/almtok/prep/latents \
      --config.num_vectors=200000 --workdir=/mnt/almtok/rvq

Check that a run fits, then launch it (every TPU worker runs the same command; see
experiments/launch/ for the TPU pod and SLURM recipes), generate and evaluate:

  python -m almtok.plan --config=configs/paper.py:base --num_devices=8
  python -m almtok.train --config=configs/paper.py:base --multihost \
      --config.data.latents_dir=/mnt/almtok/prep/latents --workdir=/mnt/almtok/runs/cont_base
  python -m almtok.train --config=configs/paper.py:base,arm=discrete --multihost \
      --config.quantizer.path=/mnt/almtok/rvq --config.data.latents_dir=/mnt/almtok/prep/latents \
      --workdir=/mnt/almtok/runs/disc_base
  python -m almtok.generate --workdir=/mnt/almtok/runs/cont_base --held_out=8 --seconds=10 \
      --out=/mnt/almtok/samples/cont_base
  python -m almtok.evaluate --workdir=/mnt/almtok/runs/cont_base --tagger=/mnt/almtok/tagger \
      --out=/mnt/almtok/eval/cont_base

Where the paper's summary gives a value it is used: sizes (24 x 768 and 32 x 1024 decoders),
128-d tokens at 25 Hz, 10 s clips, batch 2048, the head (noise prediction, cosine schedule with
1000 steps, 100 sampling steps), CFG dropout 0.1, MNTP. The rest is chosen, and each choice
says where it comes from. The mesh and accumulation are the memory table's verdicts
(experiments/benchmarks/memory.md) for the slice named per size; override `mesh.*` and
`train.grad_accum` for another slice.

The discrete arm's codes: 4 codebooks of 1024 entries per 25 Hz frame (chosen: AudioGen's
EnCodec has 4 codebooks of 2048 at 50 Hz; here the RVQ codes the continuous arm's 128-d tokens,
and experiments/benchmarks/README.md reports what the quantizer loses), delay pattern, NTP only,
top-k 250 and guidance 3 on logits when sampling (AudioGen's). AudioGen's own training schedule
is not reproduced.

Args: the size (`base` or `large`), `arm` (continuous, discrete), `steps`, `seed`.
"""

import ml_collections

from almtok import sharding
from almtok import tokenizers
from configs import common
from configs import continuous_lm
from configs import discrete_lm

ARMS = ("continuous", "discrete")
# Per arm and size, the memory table's verdict (experiments/benchmarks/memory.md): the smallest
# slice that trains it at the global batch is 8 chips of 16 GiB (TPU v5e), with 8 sequences per
# chip per micro-batch (32 micro-batches) and the least recomputation that fits there (the
# discrete Base needs none). On N chips, keep 8 rows per micro-batch with
# --config.train.grad_accum=256/N (e.g. 8 on 32 chips).
RUNS = {
    "continuous": {"base": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots"),
                   "large": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots")},
    "discrete": {"base": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="none"),
                 "large": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots")},
}
GLOBAL_BATCH = 2048   # The paper's batch (sequences of 10 s per step).
SECONDS = 10.0        # The paper's clips.
TOKENIZER = "mel_vae"


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=RUNS["continuous"], preset="base", arm="continuous",
                         steps=200_000, seed=0)
  arm = common.choice("arm", arg.arm, ARMS)
  run = RUNS[arm][arg.preset]
  tok = tokenizers.spec(TOKENIZER)
  max_len = int(round(SECONDS * tok.frame_rate))
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.model_name = f"{arm}_lm"
  config.tokenizer = TOKENIZER
  config.seconds = SECONDS

  # --- Model ------------------------------------------------------------------------------------
  # One scanned stack of blocks: compiles once whatever the depth, and remat bounds its memory.
  decoder = dict(mlp_ratio=4.0, mlp="gelu", rope_base=10_000.0, remat=run["remat"],
                 scan_layers=True)
  if arm == "continuous":
    size = common.preset(continuous_lm.MODELS, arg.preset)
    config.model = dict(
        token_dim=tok.latent_dim, max_len=max_len,
        text_dim=384,    # MiniLM-L6 width.
        text_len=32,     # Text token slots; the prefix adds the pooled sentence vector.
        decoder=dict(width=size["width"], num_layers=size["num_layers"],
                     num_heads=size["num_heads"], **decoder),
        head=dict(width=size["head_width"], depth=size["head_depth"]))
    config.paper_params = continuous_lm.PAPER_PARAMS[arg.preset]
  else:
    size = common.preset(discrete_lm.MODELS, arg.preset)
    config.model = dict(
        num_codebooks=4, codebook_size=1024,
        max_len=max_len,  # Frames; the delay pattern adds n_q - 1 steps.
        text_dim=384, text_len=32,
        decoder=dict(width=size["width"], num_layers=size["num_layers"],
                     num_heads=size["num_heads"], **decoder),
        pattern="delay")
    # The RVQ export fitted on the training latents (its n_q and k are the model's).
    config.quantizer = dict(path="", dim=tok.latent_dim)
    config.paper_params = discrete_lm.PAPER_PARAMS[arg.preset]
  # bfloat16 activations and matmuls, float32 parameters and optimizer state (chosen: the paper's
  # summary names no precision; bf16 is what TPU matmul units run at full rate).
  config.dtype = "bfloat16"
  # Parameter partitioning: (path glob, mesh axis per dimension), first match wins
  # (almtok/sharding.py).
  config.sharding_rules = sharding.PARAM_RULES

  # --- Objective and sampling -------------------------------------------------------------------
  config.loss = dict(
      cfg_dropout=0.1,
      mntp_weight=1.0 if arm == "continuous" else 0.0,   # AudioGen: NTP only.
      # Drop-ratio mixture rows (weight, alpha, beta): a high-ratio mode (mean 0.73) and a
      # low-ratio mode (mean 0.2).
      drop_mixture=((0.5, 4.0, 1.5), (0.5, 1.5, 6.0)))
  if arm == "continuous":
    # The head as in the paper: noise (eps) prediction, cosine schedule of 1000 steps, 4 noise
    # draws per token per step (MAR's diffusion batch multiplier).
    config.diffusion = dict(schedule="cosine", timesteps=1000, prediction="eps", batch_mul=4)
    # Sampling: 100 DDPM steps, guidance 3 ramping up linearly over the clip (MAR's default
    # schedule; the summary says the scale "can ramp with progress"), temperature 1.
    config.sample = dict(
        solver_steps=100, solver="ddpm", eta=0.0, cfg_scale=3.0, cfg_schedule="linear",
        temperature=1.0, clip_x0=5.0, threshold=ml_collections.config_dict.placeholder(float),
        data_range=True)
  else:
    config.sample = dict(cfg_scale=3.0, cfg_schedule="constant", temperature=1.0, top_k=250,
                         top_p=0.0)

  # --- Data, optimisation, logging, mesh --------------------------------------------------------
  config.data = dict(
      latents_dir="", seq_len=max_len, batch_size=GLOBAL_BATCH,
      worker_count=8,          # Grain processes per host (chosen: a TPU VM host has 96+ cores).
      text_cache=1_000_000)    # Captions whose MiniLM embedding stays in host memory.
  config.train = dict(
      # Steps: not in the paper's summary; chosen as about 900 passes over ~450k pairs.
      num_steps=arg.steps, max_minutes=0.0,
      # AdamW as in MAR (Li et al. 2024), whose transformer and head the paper builds on: base
      # learning rate 1e-4 per 256 sequences (8e-4 at 2048), betas (0.9, 0.95), weight decay 0.02,
      # EMA 0.9999. Warm-up then cosine decay to zero (chosen: MAR warms up then holds).
      learning_rate=8e-4, warmup_steps=5_000, final_lr_fraction=0.0, weight_decay=0.02,
      b1=0.9, b2=0.95, grad_clip=1.0, ema_decay=0.9999, ema_warmup=True,
      grad_accum=run["grad_accum"],
      log_every=100, checkpoint_every=2_000, keep_checkpoints=3, eval_every=5_000,
      eval_batches=8, peak_flops=0.0, sample_every=20_000, sample_captions=4)
  config.mesh = dict(run["mesh"])
  config.lock()
  return config
