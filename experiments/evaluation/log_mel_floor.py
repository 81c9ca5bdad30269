r"""How far faint and gross changes move a log-mel, as a function of the level it is floored at:
the experiment that chose the tagger's input floor (`config.model.floor_db` of configs/tagger.py).

  python experiments/evaluation/log_mel_floor.py --clips=100 \
      --out=experiments/evaluation/log_mel_floor.md

Real clips (synth_sounds seeds that no split uses) against: white noise at 40, 30 and 20 dB SNR,
a Griffin-Lim resynthesis (32 iterations), a 4 kHz low-pass, and another caption's clip. Per
floor, each change's mean per-clip RMS difference of the soft-floored log-mel (dB; paired: a
clip against its own degradation), and the Fréchet distance of the per-band mean and std of the
floored log-mel (`metrics.melstats`) between the clean and the changed sets (an embedding that
no one trained). A floor is good when faint hiss ranks below a wrong sound on both.
"""

import os
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from almtok import audio  # noqa: E402
from almtok import configlib  # noqa: E402
from almtok import fileio  # noqa: E402
from almtok.datasets import synth_generator  # noqa: E402
from almtok.evaluation import degrade  # noqa: E402
from almtok.evaluation import metrics  # noqa: E402
from almtok.evaluation import tagger  # noqa: E402

_CLIPS = flags.DEFINE_integer("clips", 100, "Real clips.")
_OUT = flags.DEFINE_string("out", None, "Markdown table to write (printed as well).")
FLOORS = (None, -80.0, -70.0, -60.0, -50.0, -40.0)


def main(argv):
  del argv
  seeds = synth_generator.split_seeds("reference", _CLIPS.value)
  clean = [synth_generator.render_clip(s, 4.0).wav for s in seeds]
  changes = {
      "hiss 40 dB SNR": degrade.noise(clean, 40.0, 0),
      "hiss 30 dB SNR": degrade.noise(clean, 30.0, 0),
      "hiss 20 dB SNR": degrade.noise(clean, 20.0, 0),
      "Griffin-Lim (32 it.)": degrade.griffin_lim(clean, 32, 0),
      "low-pass 4 kHz": degrade.lowpass(clean, 4000.0, 0),
      "another caption's clip": clean[1:] + clean[:1],
  }
  mels = {"clean": clean, **changes}
  mels = {k: np.stack([audio.log_mel(w) for w in v]) for k, v in mels.items()}
  lines = ["| floor (dB) | measure | " + " | ".join(changes) + " |",
           "|---|---|" + "---:|" * len(changes)]
  for floor in FLOORS:
    floored = {k: m if floor is None else tagger.soft_floor(m.astype(np.float64), floor)
               for k, m in mels.items()}
    stats = {k: np.stack([metrics.melstats(x) for x in m]) for k, m in floored.items()}
    rms = [np.mean(np.sqrt(np.mean((floored[k] - floored["clean"]) ** 2, axis=(1, 2))))
           for k in changes]
    fd = [metrics.frechet_distance(stats[k], stats["clean"]) for k in changes]
    name = "none (-100, hard)" if floor is None else f"{floor:g}"
    lines.append(f"| {name} | RMS dB, paired | " + " | ".join(f"{v:.2f}" for v in rms) + " |")
    lines.append(f"| {name} | FD melstats | " + " | ".join(f"{v:.0f}" for v in fd) + " |")
  table = "\n".join(lines) + "\n"
  print(table)
  if _OUT.value:
    header = (f"# Log-mel floor: {_CLIPS.value} real clips\n\n"
              f"`python experiments/evaluation/log_mel_floor.py --clips={_CLIPS.value} "
              f"--out={_OUT.value}`\n\n")
    with fileio.atomic_write(_OUT.value, encoding="utf-8") as f:
      f.write(header + table)


if __name__ == "__main__":
  configlib.run(main)
