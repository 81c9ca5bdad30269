"""Device mesh and sharding rules, kept as data.

The mesh has two axes: `data` (pure data parallelism: parameters replicated) and `fsdp` (data
parallelism with parameters, gradients and optimizer state sharded). The batch is split over
both. Parameters follow partition rules, kept as config data (`config.sharding_rules`, whose
default is `PARAM_RULES`): the first rule whose glob matches the parameter's path gives, per
array dimension, the mesh axis it is split over (None: not split). A dimension that
the `fsdp` axis does not divide stays whole, so every config runs on every mesh.

Paths are the parameter's keys joined by '/', e.g. `decoder/blocks/3/attn/qkv/kernel`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# (path glob, mesh axis per dimension). Large matrices are split along their input dimension,
# embeddings along their width (their row counts, such as max_len + 1 offsets or Q x (K + 1)
# codes, rarely divide by the fsdp axis; the model widths do); vectors (norms, biases) are
# replicated.
PARAM_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    # A scanned decoder stack: the leading axis is the layer, never split.
    ("*decoder/layers/*/kernel", (None, "fsdp", None)),
    ("*decoder/layers/*", ()),
    ("*/kernel", ("fsdp", None)),
    ("*/embedding", (None, "fsdp")),
    ("*null_prefix", (None, "fsdp")),
    ("*", ()),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp') mesh over all devices; -1 takes what the other axis leaves.

  Axes are Auto so that the compiler propagates shardings through NNX code (Explicit axes make
  gradients of NNX modules fail with a sharding type error).
  """
  devices = list(jax.devices() if devices is None else devices)
  data, fsdp = mesh_shape(data, fsdp, len(devices))
  return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def mesh_shape(data: int, fsdp: int, n: int) -> tuple[int, int]:
  """(data, fsdp) over n devices, -1 taking what the other axis leaves; ValueError if they do
  not multiply to n."""
  if data == -1 and fsdp == -1:
    raise ValueError("at most one of mesh.data and mesh.fsdp may be -1")
  if (data != -1 and data < 1) or (fsdp != -1 and fsdp < 1):
    raise ValueError(f"mesh data={data}, fsdp={fsdp}: each must be >= 1 or -1")
  shape = (n // fsdp if data == -1 else data, n // data if fsdp == -1 else fsdp)
  if shape[0] * shape[1] != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} does not match the {n} devices")
  return shape


def path_str(path) -> str:
  """'a/b/0/kernel' for a pytree key path.

  The `.value` slot of an NNX Variable (a Param inside a State) is left out, so a rule names the
  parameter itself whether the tree holds Variables or bare arrays.
  """
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
      continue
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules=PARAM_RULES) -> P:
  """The PartitionSpec of one parameter under `rules` on `mesh`."""
  for pattern, axes in rules:
    if fnmatch.fnmatchcase(path, pattern):
      break
  else:
    axes = ()
  axes = tuple(axes[:len(shape)]) + (None,) * (len(shape) - len(axes))
  spec = []
  for dim, axis in zip(shape, axes):
    size = mesh.shape[axis] if axis else 1
    spec.append(axis if axis and size > 1 and dim % size == 0 else None)
  return P(*spec)


def param_shardings(abstract_tree, mesh: Mesh, rules=PARAM_RULES):
  """NamedShardings for a pytree of (abstract) arrays, by `rules` ((glob, axes) pairs; lists
  read back from a run's config.json work too)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, spec_for(path_str(path), tuple(x.shape), mesh, rules)),
      abstract_tree)


def shard_rows(x: jax.Array) -> jax.Array:
  """`x` with its leading (example or token) axis split over the batch axes of the mesh in
  context, when one is set and that axis divides evenly; else `x` unchanged.

  Model code calls it on activations. Under FSDP the weights are split along their input
  dimension; left to itself the compiler may then split an activation's features the same way
  and hold every example on every device, instead of gathering the weights and keeping each
  device's own examples.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  n = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  if n == 1 or x.shape[0] % n:
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES, *([None] * (x.ndim - 1))))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dimension split over data and fsdp; the rest whole."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's local batch into global arrays split over the batch axes."""
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(put, batch)
