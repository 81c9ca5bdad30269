"""almtok's tagger and the evaluate command: clip-level targets, any-duration inputs, the trainer
end to end (tiny), adherence above its floor, and `almtok.evaluate` on the tiny run.

Shape letters: B batch, M mel bins, F frames.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from almtok import audio
from almtok import configlib
from almtok import evaluate
from almtok.datasets import synth_generator
from almtok.evaluation import tagger
from almtok.evaluation import train_tagger
from configs import tagger as tagger_config


def test_targets_of_synth_and_debian_labels():
  labels = {"events": [
      {"kind": "noise", "color": "pink", "envelope": "fade_in", "start_s": 1.0},
      {"kind": "tone", "register": "high", "envelope": "sustained", "start_s": 0.2},
      {"kind": "clicks", "tempo": "fast", "envelope": "sustained", "start_s": 2.0}]}
  t = tagger.targets(json.dumps(labels))
  kinds = dict(zip(tagger.HEAD_BY_NAME["kinds"].classes, t["kinds"]))
  assert kinds == {"tone": 1, "chord": 0, "arpeggio": 0, "chirp": 0, "noise": 1, "clicks": 1,
                   "drums": 0}
  assert t["registers"].tolist() == [0, 0, 1] and t["colors"].tolist() == [0, 1, 0]
  assert t["tempos"].tolist() == [0, 0, 1] and int(t["num_events"]) == 2
  assert tagger.HEAD_BY_NAME["first_kind"].classes[int(t["first_kind"])] == "tone"
  assert "category" not in t
  debian = tagger.targets(json.dumps({"category": "snare", "package": "hydrogen-data"}))
  assert set(debian) == {"category"}
  batch = tagger.stack_targets([t, debian])
  assert batch["kinds_mask"].tolist() == [1, 0] and batch["category_mask"].tolist() == [0, 1]


def test_tagger_takes_any_duration():
  model = tagger.Tagger((8, 8, 8, 8), 16, 4, rngs=nnx.Rngs(0))
  call = nnx.jit(lambda model, mel, frames: model(mel, frames))
  for frames in (37, 401):
    mel = jax.random.normal(jax.random.PRNGKey(0), (2, audio.N_MELS, frames)) * 20 - 40
    emb, logits = call(model, mel, jnp.array([frames, frames // 2]))
    assert emb.shape == (2, 16) and np.all(np.isfinite(emb))
    assert {k: v.shape for k, v in logits.items()} == {
        h.name: (2, len(h.classes)) for h in tagger.HEADS}


def test_adherence_of_a_tiny_tagger_is_clearly_above_its_floor():
  clips = [synth_generator.render_clip(seed, seconds=1.0) for seed in range(48)]
  mels = train_tagger.Clips([audio.log_mel(c.wav) for c in clips],
                            [json.dumps(c.labels) for c in clips], 101)
  model = tagger.Tagger((8, 16, 16, 16), 16, 4, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  batch = tagger.stack_targets(mels.targets)

  @jax.jit
  def step(params, opt):
    grads = jax.grad(lambda p: tagger.loss_fn(nnx.merge(graphdef, p), mels.mel_NxMxF,
                                              mels.frames_N, batch)[0])(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt

  for _ in range(150):
    params, opt = step(params, opt)
  _, post = tagger.predict(nnx.merge(graphdef, params), mels.mel_NxMxF, mels.frames_N)
  labels = [json.dumps(c.labels) for c in clips]
  ceiling = np.nanmean(evaluate.adherence(post, labels)["f1_overall"])
  floor = np.nanmean(evaluate.adherence_floor(post, labels))
  assert ceiling > 0.8 and ceiling > floor + 0.3, (ceiling, floor)


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tagger"))
  config = tagger_config.get_config("tiny,seconds=1.0")
  summary = train_tagger.train_and_export(config, workdir)
  return workdir, summary


def test_trainer_reports_exports_and_resumes(tiny_tagger):
  workdir, summary = tiny_tagger
  assert summary["step"] == 6 and summary["train_clips"] == 32 + 8
  scores = summary["scores"]
  assert set(scores) == {"test_synth", "test_resynth"}
  assert 0.0 <= scores["test_synth"]["kinds_macro_f1"] <= 1.0
  assert os.path.exists(os.path.join(workdir, "report", "test_synth_first_kind.png"))
  model, meta = tagger.load(workdir)
  assert meta["trained_steps"] == 6 and meta["heads"]["kinds"]["kind"] == "multi"
  # A rerun with more steps resumes from the checkpoint.
  config = tagger_config.get_config("tiny,seconds=1.0")
  with config.unlocked():
    config.train.num_steps = 8
  again = train_tagger.train_and_export(config, workdir)
  assert again["step"] == 8


def test_evaluate_end_to_end_on_the_tiny_run(tiny_lm, tiny_tagger, tmp_path):
  out = tmp_path / "eval"
  results = evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(out), num=4, batch=2,
                         resamples=50, sample_overrides={"solver_steps": 2},
                         embedding="tests.tiny:band_energy_embedding", embedding_name="bands")
  assert results["clips"] == 4 and results["paired"]
  rows = results["rows"]
  for name in ("fd_tagger", "fd_melstats", "kid_tagger", "is_tagger", "kl_tagger",
               "kl_tagger_rev", "adherence_f1_overall", "adherence_precision_overall",
               "adherence_recall_overall", "adherence_f1_normalized"):
    est = rows["generated vs real"][name]
    assert est["low"] <= est["value"] <= est["high"] or name == "kid_tagger", name
  assert "adherence ceiling (real clips)" in rows and "adherence floor (other captions)" in rows
  assert "fd_bands" in rows["generated vs real"] and "kid_bands" in rows["generated vs real"]
  assert "bands (--embedding=tests.tiny:band_energy_embedding)" in (out / "metrics.md").read_text()
  assert sorted(os.listdir(out / "generated")) == [f"{i:05d}.wav" for i in range(4)] + [
      "made_by.json"]
  for name in ("metrics.json", "metrics.md", "spectrograms.png"):
    assert os.path.getsize(out / name) > 100
  # A rerun keeps the clips already written.
  before = os.path.getmtime(out / "generated" / "00000.wav")
  evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(out), num=4, batch=2,
               resamples=20, sample_overrides={"solver_steps": 2})
  assert os.path.getmtime(out / "generated" / "00000.wav") == before
  # Clips made with other settings are never mixed in.
  with pytest.raises(configlib.ConfigError, match=r"holds clips generated with another \['seed'\]"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(out), num=4, batch=2,
                 resamples=20, seed=5, sample_overrides={"solver_steps": 2})


def test_evaluate_errors_are_one_line(tiny_lm, tiny_tagger, tmp_path):
  with pytest.raises(configlib.ConfigError, match="--tagger is empty: train one with"):
    evaluate.run(workdir=tiny_lm, tagger="", out=str(tmp_path))
  with pytest.raises(configlib.ConfigError, match=r"^--embedding=nowhere:embed: No module"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path),
                 embedding="nowhere:embed")
  with pytest.raises(configlib.ConfigError, match="no tagger there"):
    evaluate.run(workdir=tiny_lm, tagger=str(tmp_path / "none"), out=str(tmp_path))
  with pytest.raises(configlib.ConfigError, match="no finished checkpoint"):
    evaluate.run(workdir=str(tmp_path), tagger=tiny_tagger[0], out=str(tmp_path / "o"))
  with pytest.raises(configlib.ConfigError, match="--split=nope"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o"), split="nope")
  # A folder of WAVs from elsewhere: an unreadable one is skipped and listed, a wrong rate stops.
  gen = tmp_path / "other"
  gen.mkdir()
  for i in range(3):
    audio.write(str(gen / f"{i}.wav"), np.sin(np.arange(16_000) * 0.05 * (i + 1)) * 0.3, 16_000)
  (gen / "3.wav").write_bytes(b"not audio")
  captions = tmp_path / "captions.txt"
  captions.write_text("a\nb\nc\nd\n")
  results = evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o2"),
                         generated_dir=str(gen), captions_file=str(captions), resamples=20)
  assert results["clips"] == 3 and len(results["skipped"]) == 1 and not results["paired"]
  audio.write(str(gen / "3.wav"), np.zeros(8000) + 0.1, 8000)
  with pytest.raises(configlib.ConfigError, match="sample rate 8000 Hz"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o3"),
                 generated_dir=str(gen), captions_file=str(captions))


def test_compare_two_evaluations_with_a_paired_bootstrap(tiny_lm, tiny_tagger, tmp_path):
  kw = dict(workdir=tiny_lm, tagger=tiny_tagger[0], num=4, batch=4, resamples=30,
            sample_overrides={"solver_steps": 2})
  evaluate.run(out=str(tmp_path / "a"), seed=0, **kw)
  evaluate.run(out=str(tmp_path / "b"), seed=1, **kw)
  same = evaluate.compare(str(tmp_path / "a"), str(tmp_path / "a"), resamples=30)
  for row in same["rows"].values():   # A run against itself: no difference, never "differ".
    assert row["difference"]["value"] == 0 and not row["differ"]
  other = evaluate.compare(str(tmp_path / "a"), str(tmp_path / "b"), resamples=30)
  assert other["clips"] == 4 and set(other["rows"]) >= {"fd_tagger", "kl_tagger",
                                                         "adherence_f1_overall"}
  row = other["rows"]["kl_tagger"]
  assert row["difference"]["value"] == pytest.approx(row["a"] - row["b"])
  assert "| kl_tagger |" in evaluate.comparison_markdown(other)
  with pytest.raises(configlib.ConfigError, match="no scores.npz"):
    evaluate.compare(str(tmp_path / "a"), str(tmp_path / "none"))
