r"""Residual vector quantization of normalized latents: the discrete baseline's tokens.

An `RVQ` holds Q codebooks of K codes each. Stage q quantizes what stages 0..q-1 left over (the
residual) to its nearest code, so `decode` sums one code per stage and any prefix of the stages
is a coarser quantizer. It works on the latents exactly as the data pipeline yields them
(normalized with the train split's stats.json), so that the discrete and the continuous models
see the same inputs. Codebooks are fitted stage by stage with k-means (k-means++ or random-sample
initialisation, then Lloyd iterations) on a sample of train-split vectors.

  python -m almtok.quantizers.rvq --config=configs/rvq.py --workdir=/tmp/rvq \
      --config.latents_dir=/tmp/synth/latents
  python -m almtok.quantizers.rvq --config=configs/rvq.py:default --workdir=/tmp/rvq8 \
      --config.latents_dir=/tmp/synth/latents --config.n_q=8

The CLI writes the codebooks as an orbax checkpoint in <workdir>/checkpoint (`RVQ.load`) and as
<workdir>/rvq.safetensors + rvq.json (`RVQ.from_export`), and prints the relative error.

Distances use ||x||² - 2x·c + ||c||² in float32 at full matmul precision, a chunk of vectors at a
time, so memory stays at chunk x K floats whatever the number of vectors.

Shape letters: B batch, T tokens, C latent channels, N vectors, M vectors in one chunk,
G chunks, Q codebooks (stages), K codes per codebook, I k-means iterations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import hashlib
import os
import time
from typing import Any, NamedTuple

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
from safetensors import numpy as st_numpy

from almtok import checkpoint
from almtok import configlib
from almtok import fileio
from almtok.latents import store as latents_lib

Array = jax.Array

FORMAT = "almtok-rvq-1"
EXPORT_STEM = "rvq"
INITS = ("kmeans++", "random")
# Vectors per distance chunk: 4096 x K float32 (16 MiB at K = 1024).
DEFAULT_CHUNK = 4096
_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Nearest codes.
# ---------------------------------------------------------------------------------------------


def nearest(x_NxC: Array, codebook_KxC: Array, chunk: int = DEFAULT_CHUNK) -> tuple[Array, Array]:
  """(codes_N int32, d2_N float32): each vector's nearest code and its squared distance.

  Ties go to the lowest index. Jittable; `chunk` vectors are compared at a time.
  """
  n, c = x_NxC.shape
  x_NxC = x_NxC.astype(jnp.float32)
  codebook_KxC = codebook_KxC.astype(jnp.float32)
  m = max(1, min(chunk, n))
  pad = (-n) % m
  x_GxMxC = jnp.pad(x_NxC, ((0, pad), (0, 0))).reshape(-1, m, c)
  c2_1xK = jnp.sum(jnp.square(codebook_KxC), axis=-1)[None, :]

  def one_chunk(x_MxC: Array) -> tuple[Array, Array]:
    # ||x||² is the same for every code, so the argmin leaves it out; adding it after keeps the
    # comparison free of its rounding.
    xc_MxK = jnp.matmul(x_MxC, codebook_KxC.T, precision=_HIGHEST)
    score_MxK = c2_1xK - 2.0 * xc_MxK
    codes_M = jnp.argmin(score_MxK, axis=-1).astype(jnp.int32)
    best_M = jnp.take_along_axis(score_MxK, codes_M[:, None], axis=-1)[:, 0]
    d2_M = jnp.maximum(jnp.sum(jnp.square(x_MxC), axis=-1) + best_M, 0.0)
    return codes_M, d2_M

  codes_GxM, d2_GxM = jax.lax.map(one_chunk, x_GxMxC)
  return codes_GxM.reshape(-1)[:n], d2_GxM.reshape(-1)[:n]


# ---------------------------------------------------------------------------------------------
# k-means.
# ---------------------------------------------------------------------------------------------


class KMeansResult(NamedTuple):
  """Centroids after the last Lloyd update, and the mean squared distance of the vectors to
  their nearest centroid before each update (the first entry is the initialisation's)."""
  centroids_KxC: Array
  mse_I: Array


def _check_sizes(n: int, k: int) -> None:
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  if n < k:
    raise ValueError(f"k-means needs at least k={k} vectors, got {n}")


def kmeans_plus_plus(x_NxC: Array, k: int, rng: Array) -> Array:
  """k centroids drawn from the vectors, each with probability proportional to its squared
  distance to the nearest one drawn before (uniformly once every vector is covered)."""
  n, c = x_NxC.shape
  _check_sizes(n, k)
  x_NxC = x_NxC.astype(jnp.float32)
  first_key, rng = jax.random.split(rng)
  keys = jax.random.split(rng, k)
  first = jax.random.randint(first_key, (), 0, n)

  x2_N = jnp.sum(jnp.square(x_NxC), axis=-1)

  def sq_dist(y_C: Array) -> Array:
    # The expansion is a matrix-vector product; XLA's CPU loop ran the broadcast difference
    # about ten times slower.
    xy_N = jnp.matmul(x_NxC, y_C, precision=_HIGHEST)
    return jnp.maximum(x2_N - 2.0 * xy_N + jnp.sum(jnp.square(y_C)), 0.0)

  centroids_KxC = jnp.zeros((k, c), jnp.float32).at[0].set(x_NxC[first])

  def body(i: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
    centroids_KxC, d2_N = carry
    covered = jnp.sum(d2_N) <= 0.0
    logits_N = jnp.where(covered, 0.0, jnp.log(d2_N))
    j = jax.random.categorical(keys[i], logits_N)
    return centroids_KxC.at[i].set(x_NxC[j]), jnp.minimum(d2_N, sq_dist(x_NxC[j]))

  centroids_KxC, _ = jax.lax.fori_loop(1, k, body, (centroids_KxC, sq_dist(x_NxC[first])))
  return centroids_KxC


def random_init(x_NxC: Array, k: int, rng: Array) -> Array:
  """k distinct vectors (by position) drawn uniformly."""
  _check_sizes(x_NxC.shape[0], k)
  index_K = jax.random.choice(rng, x_NxC.shape[0], (k,), replace=False)
  return x_NxC.astype(jnp.float32)[index_K]


def lloyd_step(x_NxC: Array, centroids_KxC: Array,
               chunk: int = DEFAULT_CHUNK) -> tuple[Array, Array]:
  """One Lloyd iteration: (new centroids, mean squared distance to the old ones).

  Each centroid moves to the mean of the vectors nearest to it. A centroid that no vector chose
  is re-seeded at a vector far from its own centroid: the j-th empty one takes the vector with
  the j-th largest distance, so that no two take the same vector.
  """
  n = x_NxC.shape[0]
  k = centroids_KxC.shape[0]
  x_NxC = x_NxC.astype(jnp.float32)
  codes_N, d2_N = nearest(x_NxC, centroids_KxC, chunk)
  sums_KxC = jax.ops.segment_sum(x_NxC, codes_N, num_segments=k)
  counts_K = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), codes_N, num_segments=k)
  means_KxC = sums_KxC / jnp.maximum(counts_K, 1.0)[:, None]
  empty_K = counts_K == 0

  def reseed(means_KxC: Array) -> Array:
    _, far_K = jax.lax.top_k(d2_N, k)
    rank_K = jnp.cumsum(empty_K.astype(jnp.int32)) - 1
    seeds_KxC = x_NxC[far_K[jnp.clip(rank_K, 0, k - 1)]]
    return jnp.where(empty_K[:, None], seeds_KxC, means_KxC)

  new_KxC = jax.lax.cond(jnp.any(empty_K), reseed, lambda m: m, means_KxC)
  return new_KxC, jnp.mean(d2_N)


@functools.partial(jax.jit, static_argnames=("k", "iters", "init", "chunk"))
def kmeans(x_NxC: Array, k: int, iters: int, rng: Array, *, init: str = "kmeans++",
           chunk: int = DEFAULT_CHUNK) -> KMeansResult:
  """k-means of the rows of `x_NxC`: `init` ("kmeans++" or "random") then `iters` Lloyd steps."""
  if init not in INITS:
    raise ValueError(f"init must be one of {INITS}, got {init!r}")
  x_NxC = x_NxC.astype(jnp.float32)
  init_fn = kmeans_plus_plus if init == "kmeans++" else random_init
  centroids_KxC = init_fn(x_NxC, k, rng)
  step = lambda c_KxC, _: lloyd_step(x_NxC, c_KxC, chunk)
  centroids_KxC, mse_I = jax.lax.scan(step, centroids_KxC, length=iters)
  return KMeansResult(centroids_KxC, mse_I)


# ---------------------------------------------------------------------------------------------
# The quantizer.
# ---------------------------------------------------------------------------------------------


def residual_stages(codebooks_QxKxC: Array, x_NxC: Array,
                    chunk: int = DEFAULT_CHUNK) -> tuple[Array, Array, Array]:
  """Greedy residual quantization: (final residual, codes_QxN int32, err_Q).

  err_Q[q] = Σ||residual after stage q||², from the residual itself (not the distance
  expansion). Jittable.
  """
  codebooks_QxKxC = jnp.asarray(codebooks_QxKxC, jnp.float32)

  def stage(r_NxC: Array, codebook_KxC: Array) -> tuple[Array, tuple[Array, Array]]:
    codes_N, _ = nearest(r_NxC, codebook_KxC, chunk)
    r_NxC = r_NxC - codebook_KxC[codes_N]
    return r_NxC, (codes_N, jnp.sum(jnp.square(r_NxC)))

  residual_NxC, (codes_QxN, err_Q) = jax.lax.scan(stage, jnp.asarray(x_NxC, jnp.float32),
                                                  codebooks_QxKxC)
  return residual_NxC, codes_QxN, err_Q


class RVQ(NamedTuple):
  """Q residual codebooks of K codes over C channels (a pytree: pass it through `jax.jit`)."""
  codebooks_QxKxC: Array

  @property
  def n_q(self) -> int:
    return int(self.codebooks_QxKxC.shape[0])

  @property
  def k(self) -> int:
    return int(self.codebooks_QxKxC.shape[1])

  @property
  def dim(self) -> int:
    return int(self.codebooks_QxKxC.shape[2])

  def encode(self, x_BxTxC: Array, chunk: int = DEFAULT_CHUNK) -> Array:
    """Codes [B, T, Q] int32 in [0, K): greedy, stage by stage on the residual. Jittable."""
    b, t, c = x_BxTxC.shape
    if c != self.dim:
      raise ValueError(f"latents have {c} channels, the codebooks {self.dim}")
    x_NxC = jnp.reshape(x_BxTxC, (b * t, c))
    _, codes_QxN, _ = residual_stages(self.codebooks_QxKxC, x_NxC, chunk)
    return codes_QxN.T.reshape(b, t, self.n_q)

  def decode(self, codes_BxTxQ: Array) -> Array:
    """Latents [B, T, C] float32: the sum of one code per stage. Jittable.

    Codes of the first Q' <= Q stages decode with those stages alone (a coarser quantizer).
    """
    q = codes_BxTxQ.shape[-1]
    if q > self.n_q:
      raise ValueError(f"codes have {q} stages, the quantizer {self.n_q}")
    codebooks_QxKxC = jnp.asarray(self.codebooks_QxKxC, jnp.float32)[:q]
    stage_1x1xQ = jnp.arange(q).reshape(1, 1, q)
    return jnp.sum(codebooks_QxKxC[stage_1x1xQ, codes_BxTxQ], axis=-2)

  def quantize(self, x_BxTxC: Array, chunk: int = DEFAULT_CHUNK) -> Array:
    """decode(encode(x)). Jittable."""
    return self.decode(self.encode(x_BxTxC, chunk))

  # --- Files. -----------------------------------------------------------------------------------

  def meta(self, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON that describes these codebooks; `source` is `latents_source(stats)`."""
    return {"format": FORMAT, "n_q": self.n_q, "k": self.k, "dim": self.dim,
            "source": dict(source or {})}

  def save(self, directory: str | os.PathLike, *,
           source: Mapping[str, Any] | None = None) -> None:
    """Writes an orbax checkpoint (step 0 of an `almtok.checkpoint.Checkpointer`) to `directory`.

    Raises:
      FileExistsError: `directory` already holds a checkpoint.
    """
    state = {"codebooks_QxKxC": np.asarray(self.codebooks_QxKxC, np.float32)}
    with checkpoint.Checkpointer(directory, max_to_keep=None, async_save=False) as ckpt:
      if ckpt.latest_step() is not None or not ckpt.save(0, state, self.meta(source)):
        raise FileExistsError(f"{directory} already holds a checkpoint")
      ckpt.wait()

  @classmethod
  def load(cls, directory: str | os.PathLike, *,
           stats: latents_lib.Stats | None = None) -> RVQ:
    """The codebooks that `save` wrote; with `stats`, checks they were fitted on those latents."""
    rvq, meta = load_with_meta(directory)
    if stats is not None:
      check_source(meta, stats)
    return rvq

  def export(self, directory: str | os.PathLike, *,
             source: Mapping[str, Any] | None = None) -> str:
    """Writes <directory>/rvq.safetensors (`codebooks_QxKxC`) and rvq.json; returns the first.

    A reader never pairs the JSON of one export with the codebooks of another: rvq.json is the
    manifest, written last, that names the codebooks by content hash (`fileio.write_export`).
    """
    weights = st_numpy.save({"codebooks_QxKxC": np.asarray(self.codebooks_QxKxC, np.float32)},
                            metadata={"format": FORMAT})
    path, _ = fileio.write_export(directory, EXPORT_STEM, weights, self.meta(source), indent=1,
                                  ensure_ascii=False)
    return path

  @classmethod
  def from_export(cls, path: str | os.PathLike, *,
                  stats: latents_lib.Stats | None = None) -> RVQ:
    """Codebooks from `export`'s files: a directory, or the .safetensors or .json path."""
    weights, meta, meta_path = fileio.read_export(path, EXPORT_STEM)
    rvq = cls(jnp.asarray(st_numpy.load(weights)["codebooks_QxKxC"]))
    _check_meta(rvq, meta, meta_path)
    if stats is not None:
      check_source(meta, stats)
    return rvq


def load_with_meta(directory: str | os.PathLike) -> tuple[RVQ, dict[str, Any]]:
  """(codebooks, JSON meta) of the checkpoint that `RVQ.save` wrote."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no quantizer checkpoint in {directory}: not a folder")
  with checkpoint.Checkpointer(directory, max_to_keep=None, async_save=False) as ckpt:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"no quantizer checkpoint in {directory}")
    # Restored as saved (host arrays): a few MiB that every device needs whole.
    state, meta, _ = ckpt.restore(step, None)
  rvq = RVQ(jnp.asarray(state["codebooks_QxKxC"], jnp.float32))
  _check_meta(rvq, meta, directory)
  return rvq, meta


def _check_meta(rvq: RVQ, meta: Mapping[str, Any], where: str) -> None:
  if meta.get("format") != FORMAT:
    raise ValueError(f"{where}: not a quantizer (format {meta.get('format')!r})")
  if (meta["n_q"], meta["k"], meta["dim"]) != (rvq.n_q, rvq.k, rvq.dim):
    raise ValueError(f"{where}: meta says n_q, k, dim = {meta['n_q']}, {meta['k']}, "
                     f"{meta['dim']} but the codebooks are {rvq.codebooks_QxKxC.shape}")


def latents_source(stats: latents_lib.Stats) -> dict[str, Any]:
  """What identifies the latents a quantizer was fitted on: their tokenizer, their dataset and
  a hash of the normalization (codebooks only fit latents normalized the same way)."""
  mean_C, std_C = latents_lib.normalizer(stats)
  digest = hashlib.sha256(mean_C.astype("<f4").tobytes() + std_C.astype("<f4").tobytes())
  return {"tokenizer": dataclasses.asdict(stats.tokenizer), "dataset": stats.dataset,
          "normalized_from": stats.normalized_from, "train_tokens": stats.train_tokens,
          "stats_sha256": digest.hexdigest()}


def check_source(meta: Mapping[str, Any], stats: latents_lib.Stats) -> None:
  """Raises ValueError unless the quantizer in `meta` was fitted on latents like `stats`'."""
  fitted, given = meta.get("source") or {}, latents_source(stats)
  differ = [key for key in ("tokenizer", "stats_sha256") if fitted.get(key) != given[key]]
  if differ:
    raise ValueError(f"the quantizer was fitted on other latents (they differ in {differ}): "
                     f"fitted on {fitted.get('tokenizer')}, given {given['tokenizer']}")


# ---------------------------------------------------------------------------------------------
# Fitting and measuring.
# ---------------------------------------------------------------------------------------------


def fit(x_NxC: Array | np.ndarray, n_q: int, k: int, iters: int, rng: Array, *,
        init: str = "kmeans++", chunk: int = DEFAULT_CHUNK) -> RVQ:
  """Fits Q = `n_q` codebooks stage by stage: k-means of the residual the earlier stages leave.

  Args:
    x_NxC: training vectors (normalized latents), N >= k.
    n_q: Q, the number of stages.
    k: K, codes per codebook.
    iters: Lloyd iterations per stage.
    rng: a JAX PRNG key.
    init: "kmeans++" or "random" (k distinct training vectors).
    chunk: vectors per distance computation.
  """
  if n_q < 1:
    raise ValueError(f"n_q must be >= 1, got {n_q}")
  residual_NxC = jnp.asarray(x_NxC, jnp.float32)
  codebooks = []
  for key in jax.random.split(rng, n_q):
    centroids_KxC = kmeans(residual_NxC, k, iters, key, init=init, chunk=chunk).centroids_KxC
    residual_NxC, _, _ = _residual_stages_jit(centroids_KxC[None], residual_NxC, chunk)
    codebooks.append(centroids_KxC)
  return RVQ(jnp.stack(codebooks))


_residual_stages_jit = jax.jit(residual_stages, static_argnames=("chunk",))


@functools.partial(jax.jit, static_argnames=("chunk",))
def stage_errors(rvq: RVQ, x_NxC: Array, chunk: int = DEFAULT_CHUNK) -> Array:
  """Relative MSE Σ||x - x̂_q||² / Σ||x||² after each stage q = 1..Q: float32 [Q]."""
  x_NxC = jnp.asarray(x_NxC, jnp.float32)
  _, _, err_Q = residual_stages(rvq.codebooks_QxKxC, x_NxC, chunk)
  return err_Q / jnp.maximum(jnp.sum(jnp.square(x_NxC)), 1e-30)


def read_clips(latents_dir: str, split: str, *, normalized: bool = True,
               max_clips: int | None = None) -> list[latents_lib.LatentRecord]:
  """The records of a split in order (latents float32, normalized unless told otherwise)."""
  stats = latents_lib.read_stats(latents_dir)
  out = []
  for path in latents_lib.shard_paths(latents_dir, split, stats):
    for record in latents_lib.read_shard(path):
      x_TxC = record.latents.astype(np.float32)
      out.append(dataclasses.replace(record,
                                     latents=(latents_lib.normalize(x_TxC, stats) if normalized
                                              else x_TxC)))
      if max_clips is not None and len(out) >= max_clips:
        return out
  return out


def sample_vectors(latents_dir: str, num_vectors: int, *, split: str = "train",
                   seed: int = 0) -> np.ndarray:
  """Up to `num_vectors` normalized latent vectors [N, C] of a split, drawn uniformly without
  replacement over all its tokens (all of them when it has fewer), one shard in memory at a time.
  """
  stats = latents_lib.read_stats(latents_dir)
  total = stats.splits[split].tokens
  n = min(num_vectors, total)
  chosen = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
  out, offset = [], 0
  for path in latents_lib.shard_paths(latents_dir, split, stats):
    for record in latents_lib.read_shard(path):
      t = record.num_tokens
      lo, hi = np.searchsorted(chosen, [offset, offset + t])
      if hi > lo:
        out.append(latents_lib.normalize(record.latents[chosen[lo:hi] - offset], stats))
      offset += t
  if not out:
    raise ValueError(f"split {split!r} of {latents_dir} has no tokens")
  return np.concatenate(out)


def fit_from_latents(latents_dir: str, *, n_q: int, k: int, iters: int, num_vectors: int,
                     seed: int = 0, init: str = "kmeans++", chunk: int = DEFAULT_CHUNK,
                     eval_split: str | None = "validation") -> tuple[RVQ, dict[str, Any]]:
  """Fits a quantizer on a train-split sample of a prepared dataset.

  Returns the quantizer and a report: `source` (for `save`/`export`), vectors used, seconds
  taken, and the relative MSE per stage on the sample and on `eval_split` (when it exists).
  """
  stats = latents_lib.read_stats(latents_dir)
  x_NxC = sample_vectors(latents_dir, num_vectors, split="train", seed=seed)
  t0 = time.perf_counter()
  rvq = fit(x_NxC, n_q, k, iters, jax.random.key(seed), init=init, chunk=chunk)
  jax.block_until_ready(rvq)
  report = {"source": latents_source(stats), "num_vectors": int(x_NxC.shape[0]),
            "fit_seconds": time.perf_counter() - t0,
            "train_rel_mse": np.asarray(stage_errors(rvq, x_NxC, chunk)).tolist()}
  if eval_split in stats.splits and stats.splits[eval_split].tokens:
    clips = read_clips(latents_dir, eval_split)
    x_eval = np.concatenate([r.latents for r in clips])
    report[f"{eval_split}_rel_mse"] = np.asarray(stage_errors(rvq, x_eval, chunk)).tolist()
  return rvq, report


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  config_flags.DEFINE_config_file("config", None, "Quantizer config (configs/rvq.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The checkpoint, export and report go here.")
  flags.mark_flags_as_required(["config", "workdir"])


def run(config: Any, workdir: str) -> dict[str, Any]:
  """Fits the quantizer `config` describes and writes it to `workdir`; returns the report."""
  configlib.validate(config, choices={"init": INITS})
  if not config.latents_dir:
    raise configlib.ConfigError("config.latents_dir is required (<prepare workdir>/latents)")
  if not os.path.exists(os.path.join(config.latents_dir, latents_lib.STATS_FILE)):
    raise configlib.ConfigError(f"config.latents_dir={config.latents_dir!r}: no "
                                f"{latents_lib.STATS_FILE}; run almtok.prepare to completion")
  for key in ("n_q", "k", "iters", "num_vectors", "chunk"):
    if not (isinstance(config[key], int) and config[key] >= (0 if key == "iters" else 1)):
      raise configlib.ConfigError(f"config.{key}={config[key]!r}: must be an integer >= "
                                  f"{0 if key == 'iters' else 1}")
  checkpoint_dir = os.path.join(workdir, "checkpoint")
  if os.path.exists(checkpoint_dir):
    raise configlib.ConfigError(f"{checkpoint_dir} exists: use another --workdir")
  rvq, report = fit_from_latents(config.latents_dir, n_q=config.n_q, k=config.k,
                                 iters=config.iters, num_vectors=config.num_vectors,
                                 seed=config.seed, init=config.init, chunk=config.chunk,
                                 eval_split=config.eval_split or None)
  rvq.save(checkpoint_dir, source=report["source"])
  rvq.export(workdir, source=report["source"])
  latents_lib.write_json_atomic(os.path.join(workdir, "report.json"),
                                {"config": config.to_dict(), **report})
  return report


def _format_errors(errors: Sequence[float]) -> str:
  return " ".join(f"{e:.4f}" for e in errors)


def main(argv: Sequence[str]) -> None:
  del argv
  report = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(f"fitted on {report['num_vectors']} vectors in {report['fit_seconds']:.1f} s")
  for key, errors in report.items():
    if key.endswith("_rel_mse"):
      print(f"  {key} by stage: {_format_errors(errors)}")
  print(f"quantizer: {flags.FLAGS.workdir}/checkpoint and {EXPORT_STEM}.safetensors")


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
