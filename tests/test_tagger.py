"""almtok's tagger and the evaluate command: clip-level targets, any-duration inputs, the trainer
end to end (tiny), adherence above its floor, and `almtok.evaluate` on the tiny run.

Shape letters: B batch, M mel bins, F frames.
"""

import dataclasses
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
from almtok.evaluation import clap
from almtok.evaluation import degrade
from almtok.evaluation import judge
from almtok.evaluation import ladder
from almtok.evaluation import reference
from almtok.evaluation import tagger
from almtok.evaluation import train_clap
from almtok.evaluation import train_tagger
from configs import clap as clap_config
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
                            [json.dumps(c.labels) for c in clips], [c.caption for c in clips],
                            101)
  model = tagger.Tagger((8, 16, 16, 16), 16, 4, floor_db=-50.0, rngs=nnx.Rngs(0))
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
  scored = judge.Scored(np.zeros((48, 2)), post, np.zeros((48, 2)))
  captions = judge.Captions([json.dumps(c.labels) for c in clips], scored)
  est = judge.caption_estimates(judge.BY_NAME["adherence_f1"], scored, np.arange(48), captions,
                                resamples=20)
  assert est["value"].value > 0.8 and est["gap"].value > 0.3, est


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tagger"))
  config = tagger_config.get_config("tiny,seconds=1.0")
  summary = train_tagger.train_and_export(config, workdir)
  return workdir, summary


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory, tiny_tagger):
  """The tiny contrastive model, trained on the tiny tagger's build of the same clips."""
  workdir = str(tmp_path_factory.mktemp("clap"))
  config = clap_config.get_config("tiny,seconds=1.0")
  with config.unlocked():
    config.data_dir = os.path.join(tiny_tagger[0], "tfds")
  return workdir, train_clap.train_and_export(config, workdir)


def test_info_nce_never_pushes_a_repeated_caption_away_from_itself():
  ids_B = jnp.asarray([0, 0, 1])   # Clips 0 and 1 have one caption.
  logits_BxB = jnp.asarray([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
  loss, accuracy = clap.info_nce(logits_BxB, ids_B)
  e = np.exp(-5.0)
  assert float(accuracy) == 1.0
  assert float(loss) == pytest.approx((2 * np.log(2 + e) + np.log(1 + 2 * e)) / 3, rel=1e-5)
  grad = jax.grad(lambda z: clap.info_nce(z, ids_B)[0])(logits_BxB)
  # Clip 0 against its caption's other copy: not pushed down (a gradient step raises it a
  # little); against the other caption: pushed down.
  assert float(grad[0, 1]) <= 0 and float(grad[0, 2]) > 0
  # Plain diagonal targets (every caption its own) would push the copy away.
  plain = jax.grad(lambda z: clap.info_nce(z, jnp.arange(3))[0])(logits_BxB)
  assert float(plain[0, 1]) > 0.1


def test_contrastive_model_learns_a_batch_with_repeated_captions():
  model = clap.Clap(channels=16, dim=8, text_dim=12, text_hidden=16, floor_db=-50.0,
                    rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = dict(mel=jnp.asarray(rng.normal(-40, 15, (4, audio.N_MELS, 24)), jnp.float32),
               frames=jnp.asarray([24, 24, 20, 16]),
               text=jnp.asarray(rng.normal(size=(4, 5, 12)), jnp.float32),
               text_mask=jnp.asarray([[1, 1, 1, 0, 0]] * 4, bool),
               caption_id=jnp.asarray([0, 0, 1, 2]))
  batch["text"] = batch["text"].at[1].set(batch["text"][0])   # The same caption, twice.
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: clap.loss_fn(nnx.merge(graphdef, p), batch), has_aux=True)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, metrics

  first = None
  for _ in range(60):
    params, opt, metrics = step(params, opt)
    first = first or float(metrics["loss"])
  assert float(metrics["accuracy"]) == 1.0 and float(metrics["loss"]) < 0.5 * first, metrics


def test_contrastive_trainer_reports_and_exports(tiny_clap):
  workdir, summary = tiny_clap
  assert summary["step"] == 6 and summary["train_clips"] == 32 + 8
  assert set(summary["scores"]) == {"test_synth", "test_resynth"}
  s = summary["scores"]["test_synth"]
  assert s["clips"] == 16 and s["r10_chance"] == min(10, s["captions"]) / s["captions"]
  assert 0 <= s["r1"] <= s["r10"] <= 1
  assert s["gap"]["low"] <= s["gap"]["value"] <= s["gap"]["high"]
  model, meta = clap.load(workdir)
  assert meta["trained_steps"] == 6 and meta["text_max_len"] == 32
  wavs, _, _ = reference.render(3, 1.0, split="test")
  mels = [audio.log_mel(w) for w in wavs] + [audio.log_mel(wavs[0][:8000])]
  vectors = clap.embed_mels(model, mels)
  assert vectors.shape == (4, 16)
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
  # A clip's vector and a caption's do not depend on what else is embedded with them.
  np.testing.assert_allclose(clap.embed_mels(model, mels[:1])[0], vectors[0], atol=1e-6)
  states = clap.CaptionStates(meta["text_max_len"])
  texts = clap.embed_captions(model, meta, ["a low tone", "fast clicks"], states)
  np.testing.assert_allclose(clap.embed_captions(model, meta, ["fast clicks"], states)[0],
                             texts[1], atol=1e-6)


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


def test_evaluate_end_to_end_on_the_tiny_run(tiny_lm, tiny_tagger, tiny_clap, tmp_path):
  out = tmp_path / "eval"
  kw = dict(workdir=tiny_lm, tagger=tiny_tagger[0], clap=tiny_clap[0], out=str(out), num=4,
            per_caption=2,
            batch=4, resamples=20, sample_overrides={"solver_steps": 2},
            reference_cache=str(tmp_path / "cache"))
  results = evaluate.run(embedding="tests.tiny:band_energy_embedding", embedding_name="bands",
                         **kw)
  assert results["clips"] == 8 and results["captions"] == 4 and results["paired"]
  metrics = results["metrics"]
  # Every metric of the registry that applies (the 4 captions ask no direction and no tempo).
  assert set(metrics) <= set(judge.BY_NAME) | {"fd_bands", "kid_bands"}
  # With 4 captions every caption is among any clip's 10 closest: clap_r10 says nothing.
  assert set(judge.BY_NAME) - set(metrics) <= {"adherence_f1_directions", "adherence_f1_tempos",
                                               "adherence_order", "clap_r10"}
  assert "clap_r10" not in metrics
  for name in ("fd_tagger", "kid_tagger", "fd_melstats", "class_tv_tagger", "fd_bands"):
    # Generated, and at the same N the real floor and (from the tagger's log-mels) its
    # resynthesis.
    rows = metrics[name]["values"]
    want = {"generated", "real (disjoint)"} | ({"resynthesised (disjoint)"}
                                                if name != "fd_bands" else set())
    assert set(rows) == want, name
    assert rows["generated"]["low"] <= rows["generated"]["value"] <= rows["generated"]["high"]
  for name in ("kl_tagger", "adherence_f1", "adherence_events"):
    assert set(metrics[name]["values"]) >= {"value", "floor", "gap", "ceiling"}, name
  for name in ("clap_score", "clap_r1"):
    assert set(metrics[name]["values"]) >= {"value", "floor", "gap", "ceiling", "fraction"}
  assert "fraction" in metrics["adherence_f1"]["values"]
  assert "fraction" not in metrics["kl_tagger"]["values"]
  text = (out / "metrics.md").read_text()
  assert "N = 8 clips of 4 captions, 2 per caption" in text
  assert "bands (--embedding=tests.tiny:band_energy_embedding)" in text
  generated = sorted(os.listdir(out / "generated"))
  assert generated == sorted([f"{c:05d}-{k}.wav" for c in range(4) for k in range(2)]
                             + ["clips.csv", "made_by.json"])
  for name in ("metrics.json", "metrics.md", "spectrograms.png"):
    assert os.path.getsize(out / name) > 100
  # A rerun keeps the clips already written; the reference scores come from the cache.
  before = os.path.getmtime(out / "generated" / "00000-0.wav")
  evaluate.run(**kw)
  assert os.path.getmtime(out / "generated" / "00000-0.wav") == before
  assert len(os.listdir(tmp_path / "cache")) == 1
  # Clips made with other settings are never mixed in.
  with pytest.raises(configlib.ConfigError, match=r"holds clips generated with another \['seed'\]"):
    evaluate.run(**dict(kw, seed=5))
  # Compare: against itself, no difference; against another seed, paired by caption.
  evaluate.run(**dict(kw, out=str(tmp_path / "b"), seed=1, per_caption=1))
  same = evaluate.compare(str(out), str(out), resamples=20)
  for row in same["rows"].values():
    assert row["difference"]["value"] == 0 and not row["differ"]
  other = evaluate.compare(str(out), str(tmp_path / "b"), resamples=20)
  assert other["captions"] == 4 and other["clips_a"] == 8 and other["clips_b"] == 4
  assert "clap_score" in other["rows"]
  row = other["rows"]["kl_tagger"]
  assert row["difference"]["value"] == pytest.approx(row["a"] - row["b"])
  assert "| adherence_f1 |" in evaluate.comparison_markdown(other)
  with pytest.raises(configlib.ConfigError, match="no scores.npz"):
    evaluate.compare(str(out), str(tmp_path / "none"))


def test_generated_dir_pairs_files_through_a_csv(tiny_latents, tiny_tagger, tmp_path):
  """Any system's clips: named in any order, at any rate and format, paired by the CSV alone."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from configs import synth_sounds  # pylint: disable=g-import-not-at-top
  dataset = synth_sounds.get_config("tiny,seconds=1.0").dataset
  data_dir = os.path.join(os.path.dirname(tiny_latents), "tfds")
  ref = evaluate.reference_clips(dataset, data_dir, "test", None)
  folder = tmp_path / "other"
  folder.mkdir()
  rows = []
  for c, (wav, caption) in enumerate(zip(ref.wavs, ref.captions)):
    # Real clips under shuffled names: clip c as file z<3 - c>; one as 44.1 kHz flac.
    name = f"z{3 - c}.wav" if c else "first.flac"
    if c:
      audio.write(str(folder / name), wav, 16_000)
    else:
      from scipy import signal  # pylint: disable=g-import-not-at-top
      sf.write(str(folder / name), signal.resample_poly(wav, 441, 160), 44_100)
    rows.append(f"{name},\"{caption}\"")
  (folder / "junk.wav").write_bytes(b"not audio")
  (folder / "stray.ogg").write_bytes(b"")
  audio.write(str(folder / "extra.wav"), ref.wavs[1], 16_000)
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("file,caption\n" + "\n".join(rows + [
      'junk.wav,"a caption"', 'missing.wav,"x"', 'extra.wav,"a sound no caption asks for"'])
                      + "\n")
  kw = dict(tagger=tiny_tagger[0], dataset=dataset, data_dir=data_dir,
            generated_dir=str(folder), captions_csv=str(csv_path), resamples=20,
            reference_cache=str(tmp_path / "cache"))
  # extra.wav's and junk.wav's captions are not the split's (the CSV is checked before any audio
  # is read): the caption metrics cannot pair them...
  with pytest.raises(configlib.ConfigError, match=r"2 caption\(s\) of .* are not in the test "
                     r"split of synth_sounds .* score the audio alone with --metrics=fd_tagger"):
    evaluate.run(out=str(tmp_path / "o"), **kw)
  # ...the set metrics can.
  alone = evaluate.run(out=str(tmp_path / "o1"), metrics=["fd_tagger", "class_tv_tagger"], **kw)
  assert alone["clips"] == 5 and not alone["paired"]
  assert set(alone["metrics"]) == {"fd_tagger", "class_tv_tagger"}
  csv_path.write_text("file,caption\n" + "\n".join(rows + ['missing.wav,"x"']) + "\n")
  results = evaluate.run(out=str(tmp_path / "o"), **kw)
  assert results["clips"] == 4 and results["paired"] and results["per_caption"] is None
  skipped = "\n".join(results["skipped"])
  assert "no audio file 'missing.wav'" in skipped and "junk.wav: not in" in skipped
  assert "stray.ogg: not in" in skipped and "extra.wav: not in" in skipped
  # Real clips against their own captions: adherence at its ceiling (the real clips).
  f1 = results["metrics"]["adherence_f1"]["values"]
  assert f1["value"]["value"] == pytest.approx(f1["ceiling"]["value"])
  with pytest.raises(configlib.ConfigError, match="--captions_csv=.*want a header"):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,text\nx,y\n")
    evaluate.run(out=str(tmp_path / "o2"), **dict(kw, captions_csv=str(bad)))
  with pytest.raises(configlib.ConfigError, match="needs --dataset"):
    evaluate.run(out=str(tmp_path / "o2"), **dict(kw, dataset=None))


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
  with pytest.raises(configlib.ConfigError, match="--metrics: unknown metric 'is_tagger'"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o"),
                 metrics=["is_tagger"])
  with pytest.raises(configlib.ConfigError, match="no contrastive model there; train one"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o"),
                 clap=str(tmp_path / "none"))
  with pytest.raises(configlib.ConfigError, match="--metrics=clap_r1 needs --clap"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o"),
                 metrics=["fd_tagger", "clap_r1"])
  with pytest.raises(configlib.ConfigError, match="--per_caption=0"):
    evaluate.run(workdir=tiny_lm, tagger=tiny_tagger[0], out=str(tmp_path / "o"),
                 per_caption=0)


def test_a_quick_ladder_on_the_tiny_tagger(tiny_tagger, tiny_clap, tmp_path):
  model, meta = tagger.load(tiny_tagger[0])
  wavs, labels, texts = reference.render(8, 1.0, split="test")
  scorer = ladder.Scorer(model, meta, wavs, labels, 1.0, resamples=30, cache_dir=str(tmp_path),
                         clap=clap.load(tiny_clap[0]), texts=texts)
  ladders = [dataclasses.replace(degrade.BY_NAME["noise"], rungs=(10.0, -10.0)),
             dataclasses.replace(degrade.BY_NAME["swap"], rungs=(0.5, 1.0))]
  out = ladder.run_ladders(scorer, wavs, ladders)
  noise, swap = out["noise"], out["swap"]
  assert len(noise["values"]["fd_melstats"]) == 3   # Clean and two rungs.
  verdict = noise["verdicts"]["fd_melstats"]
  assert verdict["expected"] and verdict["spearman"] == 1.0 and verdict["passes"], verdict
  # A caption swap leaves the audio as it is: no set metric moves, so none passes.
  assert all(len(set(swap["values"][m])) == 1 for m in ladder.SET_METRICS)
  assert not any(swap["verdicts"][m]["passes"] for m in ladder.SET_METRICS)
  # KL against the caption's clean clip: 0 for the clip itself, more once captions are swapped.
  kl = swap["values"]["kl_tagger"]
  assert kl[0] == pytest.approx(0.0, abs=1e-9) and kl[2] > kl[1] > 0
  # The contrastive metrics are on the ladders too, the caption swap expected of them; R@10 of
  # 8 captions is left out (every caption is among the 10 closest).
  assert {"clap_score", "clap_r1"} <= set(noise["values"]) and "clap_r10" not in noise["values"]
  assert swap["verdicts"]["clap_score"]["expected"] and swap["verdicts"]["clap_r1"]["expected"]
  text = ladder.markdown(dict(command="python -m almtok.evaluation.ladder", clips=8,
                              seconds=1.0, resamples=30, taggers=["t"],
                              per_tagger={"t": dict(steps=6, seed=0, ladders=out)}))
  assert "| noise | fd_melstats | yes | +1.00," in text
