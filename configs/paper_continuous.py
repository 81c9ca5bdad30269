r"""The paper's continuous-token runs: Base (193M) and Large (462M) with MNTP on 10 s clips of
AudioCaps + WavCaps latents, at a global batch of 2048.

Prepare the latents once (mel-VAE tokens, 128-d at 25 Hz; one AudioCaps-style CSV per split,
WavCaps rows appended to train.csv):

  python -m almtok.prepare --config=configs/prepare.py:audiocaps,tokenizer=mel_vae,\
tokenizer_path=/mnt/almtok/mel_vae,audio_dir=/mnt/data/audio,csv_dir=/mnt/data/csv,max_seconds=10 \
      --workdir=/mnt/almtok/prep

Check that it fits, then launch (every TPU worker runs the same command; see
experiments/launch/ for the TPU pod and SLURM recipes):

  python -m almtok.plan --config=configs/paper_continuous.py:base --num_devices=8
  python -m almtok.train --config=configs/paper_continuous.py:base --multihost \
      --config.data.latents_dir=/mnt/almtok/prep/latents --workdir=/mnt/almtok/runs/cont_base
  python -m almtok.train --config=configs/paper_continuous.py:large --multihost \
      --config.data.latents_dir=/mnt/almtok/prep/latents --workdir=/mnt/almtok/runs/cont_large

Where the paper's summary gives a value it is used: sizes (24 x 768 and 32 x 1024 decoders),
128-d tokens at 25 Hz, 10 s clips, batch 2048, the head (noise prediction, cosine schedule with
1000 steps, 100 sampling steps), CFG dropout 0.1, MNTP. The rest is chosen, and each choice
says where it comes from. The mesh and accumulation are the memory table's verdicts
(experiments/benchmarks/memory.md) for the slice named per preset; override `mesh.*` and
`train.grad_accum` for another slice.

Args: the preset (`base` or `large`), `steps`, `seed`.
"""

import ml_collections

from configs import common
from configs import continuous_lm

# Per preset, the memory table's verdict (experiments/benchmarks/memory.md): the smallest slice
# that trains it at the global batch is 8 chips of 16 GiB (TPU v5e), with 8 sequences per chip
# per micro-batch (32 micro-batches) and the least recomputation that fits there. On N chips,
# keep 8 rows per micro-batch with --config.train.grad_accum=256/N (e.g. 8 on 32 chips).
RUNS = {
    "base": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots"),
    "large": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots"),
}
GLOBAL_BATCH = 2048   # The paper's batch (sequences of 10 s per step).


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=RUNS, preset="base", steps=200_000, seed=0)
  config = continuous_lm.get_config(f"{arg.preset},tokenizer=mel_vae,seconds=10.0,"
                                    f"seed={arg.seed}")
  config.unlock()
  add_training(config, arg, RUNS[arg.preset])
  # The head as in the paper: noise (eps) prediction, cosine schedule of 1000 steps, 4 noise
  # draws per token per step (MAR's diffusion batch multiplier); CFG dropout 0.1 and MNTP on.
  config.diffusion.update(schedule="cosine", timesteps=1000, prediction="eps", batch_mul=4)
  config.loss.update(cfg_dropout=0.1, mntp_weight=1.0)
  # Sampling: 100 DDPM steps, guidance 3 ramping up linearly over the clip (MAR's default
  # schedule; the summary says the scale "can ramp with progress"), temperature 1.
  config.sample.update(solver_steps=100, solver="ddpm", cfg_scale=3.0, cfg_schedule="linear",
                       temperature=1.0)
  config.lock()
  return config


def add_training(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict,
                 run: dict) -> None:
  """The data, optimisation, logging and mesh blocks of a paper-scale run (shared with the
  discrete baseline's `configs/paper_discrete.py`, so that the two arms differ in tokens only)."""
  # bfloat16 activations and matmuls, float32 parameters and optimizer state (chosen: the paper's
  # summary names no precision; bf16 is what TPU matmul units run at full rate).
  config.dtype = "bfloat16"
  # One scanned stack of blocks: compiles once whatever the depth, and remat bounds its memory.
  config.model.decoder.update(remat=run["remat"], scan_layers=True)
  config.data = ml_collections.ConfigDict(dict(
      latents_dir="", seq_len=config.model.max_len, batch_size=GLOBAL_BATCH,
      worker_count=8,          # Grain processes per host (chosen: a TPU VM host has 96+ cores).
      text_cache=1_000_000))   # Captions whose MiniLM embedding stays in host memory.
  config.train = ml_collections.ConfigDict(dict(
      # Steps: not in the paper's summary; chosen as about 900 passes over ~450k pairs.
      num_steps=arg.steps, max_minutes=0.0,
      # AdamW as in MAR (Li et al. 2024), whose transformer and head the paper builds on: base
      # learning rate 1e-4 per 256 sequences (8e-4 at 2048), betas (0.9, 0.95), weight decay 0.02,
      # EMA 0.9999. Warm-up then cosine decay to zero (chosen: MAR warms up then holds).
      learning_rate=8e-4, warmup_steps=5_000, final_lr_fraction=0.0, weight_decay=0.02,
      b1=0.9, b2=0.95, grad_clip=1.0, ema_decay=0.9999, ema_warmup=True,
      grad_accum=run["grad_accum"],
      log_every=100, checkpoint_every=2_000, keep_checkpoints=3, eval_every=5_000,
      eval_batches=8, peak_flops=0.0, sample_every=20_000, sample_captions=4))
  config.mesh = ml_collections.ConfigDict(dict(run["mesh"]))
