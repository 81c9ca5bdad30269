r"""The discrete baseline at AudioGen's sizes: Base (285M) and Large (1B) over RVQ codes of the
same AudioCaps + WavCaps latents as `configs/paper_continuous.py`, at the same global batch.

Prepare the latents as that config's docstring says, fit the RVQ on them, check, launch:

  python -m almtok.quantizers.rvq --config=configs/rvq.py:latents_dir=/mnt/almtok/prep/latents \
      --config.num_vectors=200000 --workdir=/mnt/almtok/rvq
  python -m almtok.plan --config=configs/paper_discrete.py:base --num_devices=8
  python -m almtok.train --config=configs/paper_discrete.py:base --multihost \
      --config.quantizer.path=/mnt/almtok/rvq --config.data.latents_dir=/mnt/almtok/prep/latents \
      --workdir=/mnt/almtok/runs/disc_base

The optimisation, data, logging and precision are the continuous runs' (`add_training`), so the
comparison differs in the tokens and the heads only; AudioGen's own training schedule is not
reproduced. Codes: 4 codebooks of 1024 entries per 25 Hz frame (chosen: AudioGen's EnCodec has
4 codebooks of 2048 at 50 Hz; here the RVQ codes the continuous arm's 128-d tokens, and
`experiments/benchmarks/README.md` reports what the quantizer loses), delay pattern, top-k 250
and guidance 3 on logits when sampling (AudioGen's).

Args: the preset (`base` or `large`), `steps`, `seed`.
"""

from configs import common
from configs import discrete_lm
from configs import paper_continuous

# Per preset, the memory table's verdict (experiments/benchmarks/memory.md): 8 chips of 16 GiB
# (TPU v5e), 8 sequences per chip per micro-batch (32 micro-batches); Base needs no remat, Large
# the "dots" policy. On N chips: --config.train.grad_accum=256/N.
RUNS = {
    "base": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="none"),
    "large": dict(mesh=dict(data=-1, fsdp=8), grad_accum=32, remat="dots"),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=RUNS, preset="base", steps=200_000, seed=0)
  config = discrete_lm.get_config(f"{arg.preset},tokenizer=mel_vae,seconds=10.0,n_q=4,k=1024,"
                                  f"pattern=delay,seed={arg.seed}")
  config.unlock()
  paper_continuous.add_training(config, arg, RUNS[arg.preset])
  config.loss.update(cfg_dropout=0.1, mntp_weight=0.0)   # AudioGen: NTP only.
  config.sample.update(cfg_scale=3.0, cfg_schedule="constant", temperature=1.0, top_k=250,
                       top_p=0.0)
  config.lock()
  return config
