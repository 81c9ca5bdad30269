"""The judge's registry and estimates on hand-made posteriors and embeddings: adherence precision,
recall and F1, structure, the mismatched-caption floor, the fraction of the range, KL beside its
floor, class frequencies, grouped set estimates; the degradations of the ladders; and the DSP
verifiers on rendered events.

Shape letters: N clips, C captions, E embedding width.
"""

import dataclasses
import json

import numpy as np
import pytest

from almtok import audio
from almtok.datasets import synth_render
from almtok.datasets import synth_scenes
from almtok.evaluation import clap
from almtok.evaluation import degrade
from almtok.evaluation import judge
from almtok.evaluation import tagger
from almtok.evaluation import verifiers


def _labels(*events_per_clip):
  def event(start, **kw):
    return dict(dict(envelope="sustained", start_s=start), **kw)
  return [json.dumps({"events": [event(float(i), **e) for i, e in enumerate(events)]})
          for events in events_per_clip]


def _scored(post, n=None):
  n = n or len(next(iter(post.values())))
  full = {h.name: np.zeros((n, len(h.classes))) for h in tagger.HEADS}
  full.update(post)
  return judge.Scored(np.zeros((n, 2)), full, np.zeros((n, 2)))


def _answering(labels):
  """Posteriors that find exactly what each caption asks (and its structure)."""
  asked = judge.asked_attributes(labels)
  post = {}
  for name, cols in judge._head_columns().items():  # pylint: disable=protected-access
    post[name] = asked[:, cols].astype(float)
  events = [sorted(json.loads(l)["events"], key=lambda e: e["start_s"]) for l in labels]
  post["num_events"] = np.eye(3)[[len(e) - 1 for e in events]]
  kinds = tagger.HEAD_BY_NAME["first_kind"].classes
  post["first_kind"] = np.eye(len(kinds))[[kinds.index(e[0]["kind"]) for e in events]]
  return post


def test_adherence_is_precision_recall_and_f1_of_the_caption_pairs():
  labels = _labels([dict(kind="tone", register="low"), dict(kind="noise", color="pink",
                                                            envelope="fade_in")])
  post = {h.name: np.zeros((1, len(h.classes))) for h in tagger.HEADS}
  kind = tagger.HEAD_BY_NAME["kinds"].classes.index
  post["kinds"][0, kind("tone")] = 0.9
  post["kinds"][0, kind("drums")] = 0.7  # Found, not asked.
  post["registers"][0, 0] = 0.8          # low: found.
  post["colors"][0, 1] = 0.2             # pink: missed.
  clip, captions = _scored(post), judge.Captions(labels, _scored(post))
  value = lambda name: judge.BY_NAME[name].matrix(clip, captions)[0, 0]
  # Asked: tone, noise, low, pink, sustained, fade_in (6); found: tone, drums, low (3); 2 in both.
  assert value("adherence_recall") == pytest.approx(2 / 6)
  assert value("adherence_precision") == pytest.approx(2 / 3)
  assert value("adherence_f1") == pytest.approx(2 * 2 / (6 + 3))
  assert value("adherence_f1_kinds") == pytest.approx(2 * 1 / (2 + 2))   # tone of {tone, noise}
  assert value("adherence_f1_registers") == 1.0 and value("adherence_f1_colors") == 0.0
  assert np.isnan(value("adherence_f1_directions"))          # The caption names no direction.
  # A clip that triggers every class finds everything asked but scores far below 1.
  loud = _scored({h.name: np.ones((1, len(h.classes))) for h in tagger.HEADS})
  assert judge.BY_NAME["adherence_recall"].matrix(loud, captions)[0, 0] == 1.0
  assert judge.BY_NAME["adherence_f1"].matrix(loud, captions)[0, 0] < 0.5


def test_structure_counts_events_and_the_order_of_kinds():
  labels = _labels([dict(kind="tone", register="low"), dict(kind="chord", register="high")],
                   [dict(kind="chord", register="high"), dict(kind="tone", register="low")],
                   [dict(kind="noise", color="white")],
                   [dict(kind="tone", register="low"), dict(kind="tone", register="high")])
  right = _scored(_answering(labels))
  captions = judge.Captions(labels, right)
  events = judge.events_matrix(right, captions)
  np.testing.assert_array_equal(np.diag(events), 1.0)
  assert events[2, 0] == 0.0 and events[0, 1] == 1.0   # One event is not two; two is two.
  order = judge.order_matrix(right, captions)
  np.testing.assert_array_equal(np.diag(order)[:2], 1.0)
  # "tone then chord" heard for "chord then tone" fails; a one-event caption, or two events of
  # one kind, has no order to check.
  assert order[0, 1] == 0.0 and np.all(np.isnan(order[:, 2])) and np.all(np.isnan(order[:, 3]))


def test_the_floor_is_the_mean_over_every_other_caption():
  matrix = np.array([[1.0, 0.0, 0.5, np.nan],
                     [0.2, 0.8, 0.4, np.nan],
                     [0.0, 1.0, 0.9, np.nan],
                     [0.3, 0.6, 0.9, 0.7]])
  own, other = judge.per_caption(matrix, np.array([0, 1, 2, 3]))
  np.testing.assert_allclose(own, [1.0, 0.8, 0.9, 0.7])
  np.testing.assert_allclose(other, [0.25, 0.3, 0.5, 0.6])   # NaN captions left out.
  # Two clips of caption 0 (rows 0 and 2), one of caption 1: per caption, its clips' mean.
  own, other = judge.per_caption(matrix[:3, :2], np.array([0, 1, 0]))
  np.testing.assert_allclose(own, [0.5, 0.8])
  np.testing.assert_allclose(other, [0.5, 0.2])


def test_fraction_is_one_for_clips_that_answer_as_the_real_ones_and_near_zero_for_others():
  labels = _labels([dict(kind="tone", register="low")], [dict(kind="chord", register="high")],
                   [dict(kind="arpeggio", register="mid", direction="rising")],
                   [dict(kind="noise", color="brown")], [dict(kind="clicks", tempo="fast")])
  real = _scored(_answering(labels))
  captions = judge.Captions(labels, real)
  metric = judge.BY_NAME["adherence_f1"]
  same = judge.caption_estimates(metric, real, np.arange(5), captions, resamples=50,
                                 ceiling=real)
  assert same["value"].value == pytest.approx(1.0) and same["fraction"].value == pytest.approx(1)
  assert same["gap"].value == pytest.approx(1.0 - same["floor"].value)
  shifted = _scored({k: np.roll(v, 1, axis=0) for k, v in real.posteriors.items()})
  other = judge.caption_estimates(metric, shifted, np.arange(5), captions, resamples=50,
                                  ceiling=real)
  assert other["fraction"].value < 0.2 and other["gap"].value < 0.1
  # KL: lower is better, so its gap is floor minus value; a clip that answers its own caption as
  # the real clip does has KL 0 and the whole floor as its gap.
  kl = judge.caption_estimates(judge.BY_NAME["kl_tagger"], real, np.arange(5), captions,
                               resamples=50)
  assert kl["value"].value == pytest.approx(0.0, abs=1e-9)
  assert kl["gap"].value == pytest.approx(kl["floor"].value) and kl["floor"].value > 1


def test_contrastive_metrics_are_cosines_and_ranks_against_every_caption():
  text_CxP = np.eye(3)
  clips_NxP = np.array([[1.0, 0.0, 0.0],    # caption 0's direction
                        [0.0, 0.6, 0.8],    # between captions 1 and 2, closer to 2
                        [0.0, 0.0, -1.0]])  # away from caption 2, tied between 0 and 1
  np.testing.assert_array_equal(clap.ranks(clips_NxP @ text_CxP.T),
                                [[0, 1, 1], [2, 1, 0], [0, 0, 2]])
  labels = _labels(*[[dict(kind="tone", register=r)] for r in ("low", "mid", "high")])
  real = dataclasses.replace(_scored(_answering(labels)), clap_NxP=text_CxP)
  captions = judge.Captions(labels, real, text_CxP)
  clips = dataclasses.replace(real, clap_NxP=clips_NxP)
  np.testing.assert_allclose(judge.clap_matrix(clips, captions), clips_NxP)
  np.testing.assert_array_equal(judge.retrieval_matrix(1)(clips, captions),
                                [[1, 0, 0], [0, 0, 1], [1, 1, 0]])
  # R@3 of 3 captions is 1 whatever the clips: left out.
  assert np.isnan(judge.retrieval_matrix(3)(clips, captions)).all()
  r1 = judge.caption_estimates(judge.BY_NAME["clap_r1"], clips, np.arange(3), captions,
                               resamples=20)
  assert r1["value"].value == pytest.approx(1 / 3) and r1["ceiling"].value == 1.0
  assert r1["floor"].value == pytest.approx((0 + 0.5 + 1) / 3)
  score = judge.caption_estimates(judge.BY_NAME["clap_score"], clips, np.arange(3), captions,
                                  resamples=20)
  assert score["value"].value == pytest.approx((1 + 0.6 - 1) / 3)
  # Without the model's vectors the contrastive metrics do not apply.
  assert judge.caption_estimates(judge.BY_NAME["clap_score"], _scored(real.posteriors),
                                 np.arange(3), judge.Captions(labels, real), resamples=20) == {}


def test_class_frequencies_and_grouped_set_estimates():
  rng = np.random.default_rng(0)
  post = {h.name: rng.uniform(size=(40, len(h.classes))) for h in tagger.HEADS}
  a = _scored(post)
  assert judge.class_tv(a, a) == 0.0
  one_class = {h.name: np.eye(len(h.classes))[np.zeros(40, int)] for h in tagger.HEADS}
  other_class = {h.name: np.eye(len(h.classes))[np.ones(40, int)] for h in tagger.HEADS}
  assert judge.class_tv(_scored(one_class), _scored(other_class)) == pytest.approx(1.0)
  x = judge.Scored(rng.standard_normal((40, 4)), post, rng.standard_normal((40, 4)))
  y = judge.Scored(rng.standard_normal((60, 4)) + 1.0,
                   {k: np.concatenate([v, v[:20]]) for k, v in post.items()},
                   rng.standard_normal((60, 4)))
  groups = np.repeat(np.arange(10), 4)   # Four clips per caption.
  for name in ("fd_tagger", "kid_tagger", "fd_inf_tagger"):
    est = judge.set_estimate(judge.BY_NAME[name], x, groups, y, resamples=50)
    assert est.low <= est.value <= est.high, (name, est)
  est = judge.set_estimate(judge.BY_NAME["fd_tagger"], x, groups, y, resamples=10)
  assert est.value == pytest.approx(judge.BY_NAME["fd_tagger"].on_sets(x, y))
  kid = judge.set_estimate(judge.BY_NAME["kid_tagger"], x, groups, y, resamples=10)
  assert kid.value == pytest.approx(1e3 * judge.metrics_lib.kernel_distance(
      x.embedding_NxE, y.embedding_NxE))   # Reported x 1e3.
  with pytest.raises(ValueError, match="unknown metric 'is_tagger'"):
    judge.select(["fd_tagger", "is_tagger"])


def test_degradations_keep_lengths_and_change_what_they_say():
  rng = np.random.default_rng(1)
  wavs = [np.sin(np.arange(n) * 0.05).astype(np.float32) * 0.5 for n in (8000, 12345)]
  for ladder in degrade.LADDERS:
    if ladder.apply is None:
      continue
    out = ladder.apply(wavs, ladder.rungs[0], 0)
    assert [w.size for w in out] == [w.size for w in wavs], ladder.name
    assert all(w.dtype == np.float32 for w in out)
    np.testing.assert_array_equal(out[0], ladder.apply(wavs, ladder.rungs[0], 0)[0])
  noisy = degrade.noise(wavs, 20.0, 0)
  snr = 10 * np.log10(np.mean(wavs[0] ** 2) / np.mean((noisy[0] - wavs[0]) ** 2))
  assert snr == pytest.approx(20.0, abs=0.3)
  ramp = [np.arange(64, dtype=np.float32)]
  shuffled = degrade.shuffle(ramp, 8, 0)[0]
  assert sorted(shuffled.tolist()) == ramp[0].tolist()
  assert all(shuffled[i * 8] != i * 8 for i in range(8))   # Every segment moved.
  swap = degrade.swap_captions(10, 0.6, 0)
  assert np.sum(swap != np.arange(10)) == 6 and sorted(swap) == list(range(10))
  low = degrade.lowpass([rng.standard_normal(16000).astype(np.float32)], 1000.0, 0)[0]
  spectrum = np.abs(np.fft.rfft(low)) ** 2
  freqs = np.fft.rfftfreq(low.size, 1 / audio.SAMPLE_RATE)
  assert spectrum[freqs > 2000].sum() < 1e-3 * spectrum[freqs < 1000].sum()


@pytest.mark.parametrize("fixed, attribute, want", [
    (dict(kind="tone", register="low", envelope="sustained"), "register", "low"),
    (dict(kind="chord", register="mid", envelope="sustained"), "register", "mid"),
    (dict(kind="arpeggio", register="high", tempo="medium"), "register", "high"),
    (dict(kind="chirp", direction="rising"), "direction", "rising"),
    (dict(kind="arpeggio", direction="falling", tempo="slow"), "direction", "falling"),
    (dict(kind="noise", color="white", envelope="sustained"), "color", "white"),
    (dict(kind="noise", color="pink", envelope="sustained"), "color", "pink"),
    (dict(kind="noise", color="brown", envelope="sustained"), "color", "brown"),
    (dict(kind="clicks", tempo="slow", envelope="sustained"), "tempo", "slow"),
    (dict(kind="drums", tempo="fast", envelope="sustained"), "tempo", "fast"),
    (dict(kind="tone", envelope="fade_in"), "envelope", "fade_in"),
    (dict(kind="noise", envelope="fade_out"), "envelope", "fade_out"),
    (dict(kind="chord", envelope="staccato", tempo="slow"), "envelope", "staccato"),
])
def test_dsp_verifiers_read_a_rendered_event(fixed, attribute, want):
  event = synth_scenes.make_event(np.random.default_rng(3), 0.2, 3.8, **fixed)
  wav, _ = synth_render.mix([event], 4.0, audio.SAMPLE_RATE, seed=0)
  measured = verifiers.decode(verifiers.codes([wav])[0])
  assert verifiers.read(measured, attribute, fixed["kind"]) == want, measured


def test_dsp_adherence_scores_the_caption_a_clip_was_made_for():
  labels, wavs = [], []
  for seed, fixed in enumerate((dict(kind="tone", register="low", envelope="sustained"),
                                dict(kind="noise", color="brown", envelope="fade_in"),
                                dict(kind="chirp", direction="falling", envelope="sustained"))):
    event = synth_scenes.make_event(np.random.default_rng(seed), 0.2, 3.8, **fixed)
    wav, events = synth_render.mix([event], 4.0, audio.SAMPLE_RATE, seed=seed)
    wavs.append(wav)
    labels.append(json.dumps({"events": events}))
  clips = _scored({}, 3)
  clips.dsp_NxV = verifiers.codes(wavs)
  matrix = judge.dsp_matrix(clips, judge.Captions(labels, clips))
  np.testing.assert_array_equal(np.diag(matrix), 1.0)
  # A steady tone has no direction, and a tone is no brown noise fading in.
  assert matrix[0, 2] < 1.0 and matrix[0, 1] < 1.0 and matrix[1, 0] < 1.0
  # Scores without waveforms have nothing for the verifiers to read.
  assert np.all(np.isnan(judge.dsp_matrix(_scored({}, 3), judge.Captions(labels, clips))))


def test_audiocaps_csv_pairs_files_by_either_id(tmp_path):
  from almtok import evaluate  # pylint: disable=g-import-not-at-top
  for name in ("abc.wav", "17.flac", "stray.ogg"):
    (tmp_path / name).write_bytes(b"")
  table = tmp_path / "audiocaps.csv"
  table.write_text("audiocap_id,youtube_id,start_time,caption\n17,zzz,0,a dog barks\n"
                   "99,abc,30,rain falls\n5,nope,0,a bell\n")
  pairs, skipped = evaluate.read_pairs(str(table), str(tmp_path))
  assert [(p.path.rsplit("/", 1)[1], p.caption) for p in pairs] == [
      ("17.flac", "a dog barks"), ("abc.wav", "rain falls")]
  assert len(skipped) == 2 and "line 4: no audio file '5'" in skipped[0]
  assert "stray.ogg: not in" in skipped[1]
