r"""almtok's contrastive text-audio model (CLAP-style), the judge's `clap_*` metrics.

  python -m almtok.evaluation.train_clap --config=configs/clap.py --workdir=runs/clap
  python -m almtok.evaluation.train_clap --config=configs/clap.py:tiny --workdir=/tmp/clap

Presets: `default` trains on the tagger's clips (synth_sounds 4000 train clips of 4 s, the train
split of debian_sounds and 400 train clips resynthesised through the `mel` tokenizer and
Griffin-Lim) for a fixed number of steps sized to about 15 minutes on an idle 2-core CPU
(`max_minutes` only stops a much slower machine); `tiny` is the test size. The report scores the
test split: synth_sounds (400 clips), their resynthesised versions (200) and debian_sounds test.
Datasets are built into `data_dir` (empty: <workdir>/tfds); point it at the tagger's to reuse
that build.
"""

import ml_collections

from configs import common

PRESETS = {
    "tiny": dict(num_train=32, num_test=16, resynth_train=8, resynth_test=8, debian=False,
                 batch_size=8, num_steps=6, max_minutes=5.0, channels=16, dim=16,
                 text_hidden=16, eval_every=3, checkpoint_every=3),
    "default": dict(num_train=4000, num_test=400, resynth_train=400, resynth_test=200,
                    debian=True, batch_size=64, num_steps=2000, max_minutes=30.0, channels=192,
                    dim=128, text_hidden=256, eval_every=500, checkpoint_every=500),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=PRESETS, preset="default", seed=0, seconds=4.0)
  p = common.preset(PRESETS, arg.preset)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  # floor_db: the log-mel's perceptual floor, the tagger's (configs/tagger.py).
  config.model = dict(channels=p["channels"], dim=p["dim"], text_dim=384,
                      text_hidden=p["text_hidden"], floor_db=-50.0)
  config.text = dict(max_len=32)   # MiniLM token slots, as the LM's.
  config.synth = dict(name="synth_sounds", seconds=arg.seconds, sample_rate=16_000, seed=0,
                      num_train=p["num_train"], num_validation=4, num_test=p["num_test"])
  config.debian = dict(name="debian_sounds" if p["debian"] else "", sample_rate=16_000,
                       max_seconds=arg.seconds)
  config.resynth = dict(tokenizer="mel", train=p["resynth_train"], test=p["resynth_test"])
  # No mixing of clips: a mix has no caption.
  config.augment = dict(gain_db=10.0, shift_s=1.0)
  config.train = dict(
      batch_size=p["batch_size"], num_steps=p["num_steps"], max_minutes=p["max_minutes"],
      learning_rate=1e-3, warmup_steps=100, final_lr_fraction=0.05, weight_decay=1e-4,
      b1=0.9, b2=0.99, grad_clip=1.0, log_every=50, eval_every=p["eval_every"],
      checkpoint_every=p["checkpoint_every"])
  config.data_dir = ""  # Empty: <workdir>/tfds.
  config.lock()
  return config
