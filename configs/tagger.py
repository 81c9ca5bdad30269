r"""almtok's audio tagger, the evaluation suite's embedding and classifier.

  python -m almtok.evaluation.train_tagger --config=configs/tagger.py --workdir=/tmp/tagger_full
  python -m almtok.evaluation.train_tagger --config=configs/tagger.py:tiny --workdir=/tmp/tagger

Presets: `default` trains on synth_sounds (4000 train clips of 4 s), the train split of
debian_sounds and `resynth_train` train clips resynthesised through the `mel` tokenizer and
Griffin-Lim, for 2000 steps (1322 s on a 2-core CPU shared with other jobs; `max_minutes` only
stops a much slower machine); `tiny` is the test size. The test split
(synth_sounds 400 clips, their resynthesised versions, debian_sounds test) is what the report
scores. Datasets are built into `data_dir` (empty: <workdir>/tfds); resynthesised clips are
cached in <workdir>/resynth/.
"""

import ml_collections

from configs import common

PRESETS = {
    "tiny": dict(num_train=32, num_test=16, resynth_train=8, resynth_test=8, debian=False,
                 batch_size=8, num_steps=6, max_minutes=5.0, channels=(8, 8, 16, 16),
                 embed_dim=16, width=32, eval_every=3, checkpoint_every=3),
    "default": dict(num_train=4000, num_test=400, resynth_train=400, resynth_test=200,
                    debian=True, batch_size=32, num_steps=2000, max_minutes=30.0,
                    channels=(16, 32, 64, 128), embed_dim=64, width=128, eval_every=500,
                    checkpoint_every=500),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=PRESETS, preset="default", seed=0, seconds=4.0)
  p = common.preset(PRESETS, arg.preset)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  # floor_db: the level the input's log-mel is softly floored at (`tagger.soft_floor`), chosen
  # by experiments/evaluation/log_mel_floor.py: 30 dB SNR hiss moves it less than a 4 kHz
  # low-pass or another caption's clip. Stored with the export; the metrics read it there.
  config.model = dict(channels=p["channels"], embed_dim=p["embed_dim"], num_groups=8,
                      width=p["width"], floor_db=-50.0)
  config.synth = dict(name="synth_sounds", seconds=arg.seconds, sample_rate=16_000, seed=0,
                      num_train=p["num_train"], num_validation=4, num_test=p["num_test"])
  # debian_sounds clips, cut to `max_seconds` (empty `name`: left out).
  config.debian = dict(name="debian_sounds" if p["debian"] else "", sample_rate=16_000,
                       max_seconds=arg.seconds)
  # Clips resynthesised through a tokenizer and its vocoder (the path generated audio takes), so
  # that the tagger does not punish the vocoder's artefacts: this many train and test clips.
  config.resynth = dict(tokenizer="mel", train=p["resynth_train"], test=p["resynth_test"])
  config.augment = dict(gain_db=10.0, shift_s=1.0, mix_prob=0.3)
  config.train = dict(
      batch_size=p["batch_size"], num_steps=p["num_steps"], max_minutes=p["max_minutes"],
      learning_rate=2e-3, warmup_steps=100, final_lr_fraction=0.05, weight_decay=1e-4,
      b1=0.9, b2=0.99, grad_clip=1.0, log_every=50, eval_every=p["eval_every"],
      checkpoint_every=p["checkpoint_every"])
  config.data_dir = ""  # Empty: <workdir>/tfds.
  config.lock()
  return config
