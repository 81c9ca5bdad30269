"""Numbered training checkpoints: a pytree of arrays plus JSON metadata, through orbax.

A thin layer over `orbax.checkpoint.CheckpointManager`. Each step directory holds two items:
`state` (any pytree of jax/numpy arrays, saved with `StandardSave`) and `meta` (a small JSON
dict: config, counters, whatever the trainer wants back). Callers may add items of their own
(for example a data iterator's state) as extra `ocp.args` pairs. Saves are asynchronous by
default and atomic: orbax writes into a temporary directory and renames it when complete, so a
crash never leaves a step that `latest_step` reports but `restore` cannot read. Only the last
`max_to_keep` steps are kept. In multi-process runs every process calls the same methods; orbax
decides who writes what.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


def abstract_like(tree: PyTree) -> PyTree:
  """`jax.ShapeDtypeStruct`s (with shardings where the leaves have them) for a pytree."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores numbered steps under `directory` (created if missing)."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: PyTree, meta: Mapping[str, Any] | None = None, *,
           extra_args: Mapping[str, ocp.args.CheckpointArgs] | None = None) -> bool:
    """Starts saving `state` and `meta` as `step`; returns False when that step already exists.

    The arrays are copied before this returns, so the caller may donate or overwrite them
    while the write finishes in the background.
    """
    if step in self._manager.all_steps():
      return False
    args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {})))
    args.update(extra_args or {})
    return bool(self._manager.save(step, args=ocp.args.Composite(**args), force=True))

  def latest_step(self) -> int | None:
    """The newest complete step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, step: int, abstract_state: PyTree, *,
              extra_args: Mapping[str, ocp.args.CheckpointArgs] | None = None
              ) -> tuple[PyTree, dict[str, Any], dict[str, Any]]:
    """(state, meta, extras) of `step`. `abstract_state` gives the structure, shapes, dtypes and
    shardings to restore into: `ShapeDtypeStruct`s, or concrete arrays to mirror.
    """
    abstract_state = abstract_like(abstract_state)
    args = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    args.update(extra_args or {})
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    extras = {name: restored[name] for name in (extra_args or {})}
    return restored["state"], dict(restored["meta"] or {}), extras

  def restore_item(self, step: int, name: str, abstract_tree: PyTree) -> PyTree:
    """One array item of `step` alone (e.g. a model's weights without the optimizer state)."""
    args = {name: ocp.args.StandardRestore(abstract_like(abstract_tree))}
    return self._manager.restore(step, args=ocp.args.Composite(**args))[name]

  def restore_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of `step` alone (no arrays are read)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"] or {})

  def wait(self) -> None:
    """Blocks until every save that has started is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


# ---------------------------------------------------------------------------------------------
# A module's parameters as a flat dict, the layout of safetensors exports.
# ---------------------------------------------------------------------------------------------


def flat_params(module) -> dict[str, Any]:
  """Every `nnx.Param` of `module` as a numpy array, keyed by its '/'-joined path."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return {"/".join(str(p) for p in path): np.asarray(var.get_value())
          for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def with_flat_params(abstract_module, weights: Mapping[str, Any], where: str):
  """`abstract_module` (from `nnx.eval_shape`) with its parameters from `flat_params`-keyed
  `weights`; ValueError naming `where` when a name or a shape does not match."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, abstract_state = nnx.split(abstract_module)
  expected = {"/".join(str(p) for p in path): var
              for path, var in nnx.to_flat_state(abstract_state)}
  if set(weights) != set(expected):
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    raise ValueError(f"{where} does not match the architecture: missing {missing[:5]}, "
                     f"unexpected {unexpected[:5]}")
  flat = []
  for path, var in nnx.to_flat_state(abstract_state):
    key = "/".join(str(p) for p in path)
    value = weights[key]
    if tuple(value.shape) != tuple(var.shape):
      raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, the architecture wants "
                       f"{tuple(var.shape)}")
    flat.append((path, var.replace(jnp.asarray(value))))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
