"""Tests of the residual vector quantizer (almtok/quantizers/rvq.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almtok.latents import store as latents_lib
from almtok.quantizers import rvq as rvq_lib
from configs import rvq as rvq_config

B, T, C, Q, K = 8, 128, 8, 4, 16
N = B * T


def brute_force_nearest(x_NxC, codebook_KxC):
  d2_NxK = np.square(x_NxC[:, None, :].astype(np.float64)
                     - codebook_KxC[None, :, :].astype(np.float64)).sum(-1)
  return d2_NxK.argmin(-1), d2_NxK.min(-1)


@pytest.fixture(scope="module")
def gaussian():
  return np.random.default_rng(0).standard_normal((N, C)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(gaussian):
  return rvq_lib.fit(gaussian, Q, K, 5, jax.random.key(0), chunk=300)


def test_nearest_matches_brute_force():
  rng = np.random.default_rng(1)
  x_NxC = rng.standard_normal((301, 5)).astype(np.float32)
  codebook_KxC = rng.standard_normal((7, 5)).astype(np.float32)
  codes_N, d2_N = rvq_lib.nearest(jnp.asarray(x_NxC), jnp.asarray(codebook_KxC), chunk=64)
  want_codes, want_d2 = brute_force_nearest(x_NxC, codebook_KxC)
  assert codes_N.dtype == jnp.int32 and codes_N.shape == (301,)
  np.testing.assert_array_equal(np.asarray(codes_N), want_codes)
  np.testing.assert_allclose(np.asarray(d2_N), want_d2, rtol=1e-5, atol=1e-5)


def test_kmeans_recovers_mixture_centres():
  centres_4x2 = np.array([[-4.0, -4.0], [-4.0, 4.0], [4.0, -4.0], [5.0, 5.0]], np.float32)
  rng = np.random.default_rng(2)
  x_Nx2 = (np.repeat(centres_4x2, 200, axis=0)
           + 0.2 * rng.standard_normal((800, 2))).astype(np.float32)
  result = rvq_lib.kmeans(jnp.asarray(x_Nx2), 4, 10, jax.random.key(3))
  found_4x2 = np.asarray(result.centroids_KxC)
  match, dist = brute_force_nearest(centres_4x2, found_4x2)
  assert sorted(match) == [0, 1, 2, 3]  # One found centre per true centre.
  assert np.sqrt(dist).max() < 0.05
  mse_I = np.asarray(result.mse_I)
  assert mse_I.shape == (10,)
  assert np.all(np.diff(mse_I) <= 1e-6 * mse_I[0])  # Lloyd never increases the error.
  assert mse_I[-1] == pytest.approx(2 * 0.2**2, rel=0.15)


def test_kmeans_plus_plus_takes_each_distinct_point_once():
  points_6x3 = 3 * np.arange(18, dtype=np.float32).reshape(6, 3)
  x_Nx3 = np.tile(points_6x3, (10, 1))
  init = jax.jit(rvq_lib.kmeans_plus_plus, static_argnums=1)
  centroids_6x3 = np.asarray(init(jnp.asarray(x_Nx3), 6, jax.random.key(0)))
  assert sorted(map(tuple, centroids_6x3)) == sorted(map(tuple, points_6x3))


def test_random_init_draws_distinct_vectors(gaussian):
  centroids_KxC = np.asarray(rvq_lib.kmeans(gaussian, K, 0, jax.random.key(1),
                                            init="random").centroids_KxC)
  index_K, d2_K = brute_force_nearest(centroids_KxC, gaussian)
  assert np.all(d2_K == 0) and len(set(index_K)) == K


def test_empty_cluster_is_reseeded_at_the_farthest_vector():
  x_Nx2 = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 0.0], [9.0, 0.0]], np.float32)
  centroids_3x2 = np.array([[0.0, 0.0], [100.0, 100.0], [-100.0, -100.0]], np.float32)
  new_3x2, mse = rvq_lib.lloyd_step(jnp.asarray(x_Nx2), jnp.asarray(centroids_3x2))
  new_3x2 = np.asarray(new_3x2)
  # Every vector chose centroid 0, so it moves to their mean; the two empty ones take the
  # farthest vector (9, 0) and the next farthest (3, 0), in that order.
  np.testing.assert_allclose(new_3x2[0], x_Nx2.mean(0), rtol=1e-6)
  np.testing.assert_array_equal(new_3x2[1:], [[9.0, 0.0], [3.0, 0.0]])
  assert float(mse) == pytest.approx((0.01 + 0.01 + 9.0 + 81.0) / 5, rel=1e-6)


def test_shapes_dtypes_and_code_range(fitted, gaussian):
  assert fitted.codebooks_QxKxC.shape == (Q, K, C)
  assert (fitted.n_q, fitted.k, fitted.dim) == (Q, K, C)
  x_BxTxC = jnp.asarray(gaussian.reshape(B, T, C))
  codes_BxTxQ = fitted.encode(x_BxTxC)
  assert codes_BxTxQ.shape == (B, T, Q) and codes_BxTxQ.dtype == jnp.int32
  assert int(codes_BxTxQ.min()) >= 0 and int(codes_BxTxQ.max()) < K
  x_hat_BxTxC = fitted.decode(codes_BxTxQ)
  assert x_hat_BxTxC.shape == x_BxTxC.shape and x_hat_BxTxC.dtype == jnp.float32
  assert fitted.decode(codes_BxTxQ[..., :2]).shape == x_BxTxC.shape
  with pytest.raises(ValueError, match="channels"):
    fitted.encode(jnp.zeros((1, 2, C + 1)))


def test_encode_is_greedy_nearest_per_stage(fitted, gaussian):
  codes_NxQ = np.asarray(fitted.encode(jnp.asarray(gaussian.reshape(B, T, C))).reshape(N, Q))
  books_QxKxC = np.asarray(fitted.codebooks_QxKxC)
  residual_NxC = gaussian.astype(np.float64)
  for q in range(Q):
    want, _ = brute_force_nearest(residual_NxC, books_QxKxC[q])
    np.testing.assert_array_equal(codes_NxQ[:, q], want)
    residual_NxC = residual_NxC - books_QxKxC[q][want]


def test_each_stage_lowers_the_error(fitted, gaussian):
  err_Q = np.asarray(rvq_lib.stage_errors(fitted, gaussian))
  assert err_Q.shape == (Q,)
  assert 0 < err_Q[-1] and err_Q[0] < 1
  assert np.all(np.diff(err_Q) <= 0), err_Q
  # The same numbers from the codes, summed stage by stage here.
  codes_NxQ = np.asarray(fitted.encode(jnp.asarray(gaussian.reshape(B, T, C))).reshape(N, Q))
  books_QxKxC = np.asarray(fitted.codebooks_QxKxC)
  x_hat_NxC = np.zeros_like(gaussian)
  for q in range(Q):
    x_hat_NxC += books_QxKxC[q][codes_NxQ[:, q]]
    rel = np.square(gaussian - x_hat_NxC).sum() / np.square(gaussian).sum()
    assert rel == pytest.approx(err_Q[q], rel=1e-4)


def test_exact_when_codes_cover_the_distinct_vectors():
  # Integer coordinates: sums and means of equal vectors are exact in float32.
  rng = np.random.default_rng(4)
  points_12x3 = rng.integers(-20, 20, size=(12, 3)).astype(np.float32)
  x_NxC = points_12x3[rng.integers(0, 12, size=240)]
  # More codes than points: the spare codes start as duplicates and are re-seeded.
  quantizer = rvq_lib.fit(x_NxC, 2, 16, 3, jax.random.key(0))
  x_hat = np.asarray(quantizer.quantize(jnp.asarray(x_NxC[None]))[0])
  np.testing.assert_array_equal(x_hat, x_NxC)


def test_jit_matches_eager(fitted, gaussian):
  x_BxTxC = jnp.asarray(gaussian.reshape(B, T, C))
  codes = jax.jit(rvq_lib.RVQ.encode)(fitted, x_BxTxC)
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(fitted.encode(x_BxTxC)))
  np.testing.assert_array_equal(np.asarray(jax.jit(rvq_lib.RVQ.decode)(fitted, codes)),
                                np.asarray(fitted.decode(codes)))


def test_save_load_and_export_round_trip(fitted, tmp_path):
  stats = fake_stats(C)
  source = rvq_lib.latents_source(stats)
  fitted.save(tmp_path / "ckpt", source=source)
  loaded = rvq_lib.RVQ.load(tmp_path / "ckpt", stats=stats)
  np.testing.assert_array_equal(np.asarray(loaded.codebooks_QxKxC),
                                np.asarray(fitted.codebooks_QxKxC))
  _, meta = rvq_lib.load_with_meta(tmp_path / "ckpt")
  assert (meta["n_q"], meta["k"], meta["dim"]) == (Q, K, C)
  assert meta["source"]["stats_sha256"] == source["stats_sha256"]
  with pytest.raises(FileExistsError):
    fitted.save(tmp_path / "ckpt")
  with pytest.raises(FileNotFoundError):
    rvq_lib.RVQ.load(tmp_path / "nothing")
  assert not os.path.exists(tmp_path / "nothing")
  other = stats.replace(std_C=np.full(C, 2.0))
  with pytest.raises(ValueError, match="stats_sha256"):
    rvq_lib.RVQ.load(tmp_path / "ckpt", stats=other)

  path = fitted.export(tmp_path / "export", source=source)
  assert os.path.basename(path) == "rvq.safetensors"
  for where in (tmp_path / "export", path):
    exported = rvq_lib.RVQ.from_export(where, stats=stats)
    np.testing.assert_array_equal(np.asarray(exported.codebooks_QxKxC),
                                  np.asarray(fitted.codebooks_QxKxC))
  with open(tmp_path / "export" / "rvq.json", encoding="utf-8") as f:
    assert json.load(f)["k"] == K


# ---------------------------------------------------------------------------------------------
# Prepared latents on disk.
# ---------------------------------------------------------------------------------------------


def fake_stats(channels, splits=None):
  return latents_lib.Stats(
      tokenizer=latents_lib.TokenizerSpec("fake", {}, 16_000, 25.0, channels),
      latent_dtype="float16", dataset={"name": "fake"}, normalized_from="train", train_tokens=0,
      mean_C=np.full(channels, 0.5), std_C=np.asarray([2.0] + [1.0] * (channels - 1)),
      min_C=None, max_C=None, splits=splits or {}, skipped_total=0, skipped_by_kind={})


@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory):
  """Two train shards and a validation shard of random float16 latents."""
  root = str(tmp_path_factory.mktemp("latents"))
  rng = np.random.default_rng(5)
  splits, clips = {}, {}
  for split, shard_sizes in (("train", (3, 2)), ("validation", (2,))):
    shards, tokens = [], 0
    for s, size in enumerate(shard_sizes):
      records = [latents_lib.LatentRecord(
          f"{split}{s}{i}", "a caption", "{}", 1.0,
          rng.standard_normal((40 + 7 * i, C)).astype(np.float16)) for i in range(size)]
      clips.setdefault(split, []).extend(records)
      name = latents_lib.shard_name(split, s, len(shard_sizes)) + latents_lib.SHARD_SUFFIX
      os.makedirs(os.path.join(root, split), exist_ok=True)
      latents_lib.write_shard(os.path.join(root, split, name),
                              (latents_lib.encode_record(r) for r in records))
      shards.append(latents_lib.ShardEntry(name, size))
      tokens += sum(r.num_tokens for r in records)
    splits[split] = latents_lib.SplitStats(
        inputs=len(shards), records=sum(e.records for e in shards), skipped=0, tokens=tokens,
        max_tokens=40 + 7 * (max(shard_sizes) - 1), seconds=float(sum(shard_sizes)),
        shards=tuple(shards))
  stats = fake_stats(C, splits)
  latents_lib.write_json_atomic(os.path.join(root, latents_lib.STATS_FILE), stats.to_json())
  return root, stats, clips


def test_sample_vectors_are_normalized_train_rows(latents_dir):
  root, stats, clips = latents_dir
  all_NxC = np.concatenate([r.latents.astype(np.float32) for r in clips["train"]])
  want_NxC = (all_NxC - 0.5) / np.asarray(stats.std_C, np.float32)[None, :]
  everything = rvq_lib.sample_vectors(root, 10_000)
  np.testing.assert_allclose(everything, want_NxC, rtol=1e-6, atol=1e-6)
  some = rvq_lib.sample_vectors(root, 50, seed=1)
  assert some.shape == (50, C) and some.dtype == np.float32
  index, d2 = brute_force_nearest(some, want_NxC)
  assert np.all(d2 < 1e-10) and len(set(index)) == 50


def test_command_line_run_writes_a_loadable_quantizer(latents_dir, tmp_path):
  root, stats, _ = latents_dir
  config = rvq_config.get_config(f"tiny,latents_dir={root}")
  report = rvq_lib.run(config, str(tmp_path))
  assert report["num_vectors"] == min(config.num_vectors, stats.splits["train"].tokens)
  assert len(report["validation_rel_mse"]) == config.n_q
  assert np.all(np.diff(report["train_rel_mse"]) <= 0)
  loaded = rvq_lib.RVQ.load(tmp_path / "checkpoint", stats=stats)
  exported = rvq_lib.RVQ.from_export(tmp_path, stats=stats)
  assert loaded.codebooks_QxKxC.shape == (config.n_q, config.k, C)
  np.testing.assert_array_equal(np.asarray(loaded.codebooks_QxKxC),
                                np.asarray(exported.codebooks_QxKxC))
