"""The synth_sounds TFDS builder and the build_data entry point, on a tiny build."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from almtok import build_data
from almtok.datasets import synth_generator
from almtok.datasets import tfds_common
from configs import synth_sounds as synth_config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("synth"))
  config = synth_config.get_config("tiny,seconds=1.0")
  summary = build_data.show(config, workdir)
  return config, workdir, summary


def test_splits_have_the_configured_sizes(built):
  config, _, summary = built
  sizes = {split: s["clips"] for split, s in summary["splits"].items()}
  assert sizes == {"train": config.dataset.num_train, "validation": config.dataset.num_validation,
                   "test": config.dataset.num_test}


def test_records_equal_the_generator(built):
  config, workdir, _ = built
  from almtok.datasets import registry as datasets  # pylint: disable=g-import-not-at-top
  sources = datasets.get_builder(config.dataset, os.path.join(workdir, "tfds")).as_data_source()
  seen = set()
  for split, source in sources.items():
    for i in range(len(source)):
      record = source[i]
      clip_id = tfds_common.decode_text(record["id"])
      split_name, seed = clip_id.rsplit("-", 1)
      assert split_name == split and seed.isdigit()
      assert int(seed) in synth_generator.split_seeds(split, len(source), config.dataset.seed)
      clip = synth_generator.render_clip(int(seed), seconds=1.0)
      np.testing.assert_array_equal(record["audio"], clip.wav)
      assert tfds_common.decode_text(record["caption"]) == clip.caption
      assert json.loads(tfds_common.decode_text(record["labels"])) == json.loads(
          json.dumps(clip.labels))
      assert float(record["seconds"]) == pytest.approx(1.0)
      seen.add(clip_id)
  assert len(seen) == sum(len(s) for s in sources.values())


def test_overview_files(built):
  config, workdir, summary = built
  out = os.path.join(workdir, "overview")
  wavs = sorted(f for f in os.listdir(out) if f.endswith(".wav"))
  assert len(wavs) == min(config.show.num_examples, config.dataset.num_validation)
  info = sf.info(os.path.join(out, wavs[0]))
  assert info.samplerate == 16_000 and info.channels == 1
  assert os.path.getsize(os.path.join(out, "spectrograms.png")) > 10_000
  with open(os.path.join(out, "summary.json")) as f:
    assert json.load(f)["examples"] == summary["examples"]


def test_rebuild_is_a_no_op(built):
  config, workdir, _ = built
  data_dir = os.path.join(workdir, "tfds")
  before = {p: os.path.getmtime(os.path.join(r, p)) for r, _, fs in os.walk(data_dir) for p in fs}
  build_data.show(config, workdir)
  after = {p: os.path.getmtime(os.path.join(r, p)) for r, _, fs in os.walk(data_dir) for p in fs}
  assert before == after
