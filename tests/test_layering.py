"""almtok's imports run downwards only: a module may import its own layer or the layers below it,
never an entry point, and the blocks keep the data flow's direction (raw datasets know nothing of
prepared latents, quantizers nothing of models). The layers and the forbidden pairs are data."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "almtok")

# Top-level units of `almtok` by layer, highest first.
LAYERS = (
    ("entry points", ("build_data", "prepare", "train", "generate", "evaluate", "param_count",
                      "plan")),
    ("engines", ("sample", "inference", "state", "objective", "evaluation")),
    ("blocks", ("models", "diffusion", "datasets", "tokenizers", "latents", "quantizers", "text")),
    ("foundation", ("audio", "configlib", "sharding", "checkpoint", "optim", "plotting",
                    "events", "fileio", "flops", "rng")),
)
# Within a layer: (importer, imported) pairs that would run against the data flow.
FORBIDDEN = (
    ("datasets", "latents"), ("datasets", "tokenizers"), ("datasets", "quantizers"),
    ("datasets", "models"), ("tokenizers", "latents"), ("tokenizers", "quantizers"),
    ("tokenizers", "models"), ("latents", "models"), ("latents", "quantizers"),
    ("quantizers", "models"), ("quantizers", "tokenizers"), ("text", "models"),
    ("diffusion", "models"),
)
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def _unit(path: str) -> str:
  rel = os.path.relpath(path, PACKAGE)
  return rel.split(os.sep)[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> set[str]:
  units = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = ([f"{node.module}.{a.name}" for a in node.names] if node.module == "almtok"
               else [node.module])
    else:
      continue
    units.update(n.split(".")[1] for n in names if n.startswith("almtok."))
  return units


def _edges():
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
          tree = ast.parse(f.read(), path)
        for imported in _imported_units(tree):
          yield os.path.relpath(path, ROOT), _unit(path), imported


def test_every_unit_has_a_layer():
  units = {_unit(os.path.join(PACKAGE, n)) for n in os.listdir(PACKAGE)
           if n.endswith(".py") and n != "__init__.py" or os.path.isdir(os.path.join(PACKAGE, n))
           and os.path.exists(os.path.join(PACKAGE, n, "__init__.py"))}
  assert units == set(RANK), (sorted(units - set(RANK)), sorted(set(RANK) - units))


def test_imports_run_downwards_only():
  bad = []
  for path, unit, imported in _edges():
    if imported == unit:
      continue
    if imported not in RANK:
      bad.append(f"{path}: imports almtok.{imported}, which has no layer")
    elif RANK[imported] < RANK[unit] or RANK[imported] == 0:
      bad.append(f"{path} ({LAYERS[RANK[unit]][0]}) imports almtok.{imported} "
                 f"({LAYERS[RANK[imported]][0]})")
    elif (unit, imported) in FORBIDDEN:
      bad.append(f"{path}: {unit} must not import {imported} (against the data flow)")
  assert not bad, "\n".join(sorted(set(bad)))


def test_the_check_can_fail():
  tree = ast.parse("from almtok import train\nimport almtok.models.decoder\n"
                   "from almtok.latents import store")
  assert _imported_units(tree) == {"train", "models", "latents"}


def _readme_layout() -> str:
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  start = text.index("\n## Layout\n")
  return text[start:text.index("\n## ", start + 1)]


def test_the_readme_layout_names_every_module():
  layout = _readme_layout()
  words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", layout))
  missing = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py") and name != "__init__.py" and name[:-3] not in words:
        missing.append(os.path.relpath(os.path.join(folder, name), ROOT))
  assert not missing, f"README.md's layout does not name {sorted(missing)}"
