"""kmax-tf's dependencies run downward: no module imports from a layer above its own.

Every module of the installed package is parsed with `ast` from the repository directories that
setup.py maps (`kmax_tf/`, `trainer/` -> `kmax_tf.trainer`, `evaluation/` -> `kmax_tf.evaluation`,
`configs/` -> `kmax_tf.configs`). Each of its imports of kmax_tf, at module level or inside a
function, in any form (`import x`, `from x import y`, relative, `importlib.import_module` with a
constant name), must go to its own layer of `LAYERS` or to a lower one; every module must have a
layer, so a new module has to be placed; and the import graph must have no cycle, which keeps the
modules of one layer in an order too. Names built at run time (`import_module(f"...")`) are not
seen.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT_PACKAGE = "kmax_tf"

# Top to bottom. An entry names one module; "pkg.*" names a package and every module in it. The
# most specific entry places a module: a named module wins over a pattern, a longer pattern over a
# shorter one. Entries may name modules that do not exist (yet).
LAYERS = (
    # The entry points, in two layers: `kmax-tf train` and `kmax-tf demo` run the absl training
    # binary and the demo, which must not need the console script's modules.
    ("entry points: console script", (
        "kmax_tf.cli", "kmax_tf.commands.*",
    )),
    ("entry points: training binary and demo", (
        "kmax_tf.trainer.train", "kmax_tf.demo",
    )),
    # The applications, in two layers: training may run the evaluator, not the reverse.
    ("applications: training", (
        "kmax_tf.trainer.*",
    )),
    ("applications: evaluation and serving", (
        "kmax_tf.evaluation.evaluator", "kmax_tf.export", "kmax_tf.predict",
    )),
    ("library", (
        "kmax_tf.model.*", "kmax_tf.data.*", "kmax_tf.losses.*", "kmax_tf.postprocess",
        "kmax_tf.convert_deeplab2", "kmax_tf.weight_io", "kmax_tf.inference",
        "kmax_tf.panoptic_files",
        # The evaluation package (its lazy attributes) and its metrics.
        "kmax_tf.evaluation", "kmax_tf.evaluation.panoptic_quality", "kmax_tf.evaluation.miou",
        "kmax_tf.evaluation.coco_ap", "kmax_tf.evaluation.pq_core", "kmax_tf.evaluation.pq_files",
        "kmax_tf.evaluation.panoptic_png",
    )),
    ("base", (
        "kmax_tf", "kmax_tf.config", "kmax_tf.config_validation", "kmax_tf.config_types",
        "kmax_tf.configs", "kmax_tf.datasets", "kmax_tf.geometry", "kmax_tf.images",
        "kmax_tf.ops.*", "kmax_tf.protos.*",
    )),
)


def package_dirs() -> dict:
  """setup.py's `{package: repository directory}` (`_PACKAGE_DIRS`)."""
  tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id == "_PACKAGE_DIRS" for target in node.targets):
      return ast.literal_eval(node.value)
  raise AssertionError("setup.py defines no _PACKAGE_DIRS")


def repository_modules() -> dict:
  """`{dotted module name: (path, source)}` of every module the package installs."""
  modules = {}
  for package, directory in package_dirs().items():
    for path in sorted((REPO / directory).rglob("*.py")):
      parts = list(path.relative_to(REPO / directory).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts.pop()
      modules[".".join([package, *parts])] = (path, path.read_text(encoding="utf-8"))
  return modules


def layer_of(module: str):
  """Index in `LAYERS` (0 is the top) of `module`, or None if no entry places it."""
  exact = [index for index, (_, entries) in enumerate(LAYERS) if module in entries]
  if exact:
    return exact[0]
  best, best_length = None, -1
  for index, (_, entries) in enumerate(LAYERS):
    for entry in entries:
      if entry.endswith(".*"):
        package = entry[:-2]
        if (module == package or module.startswith(package + ".")) and len(package) > best_length:
          best, best_length = index, len(package)
  return best


def _import_module_name(node):
  """The constant name given to `importlib.import_module(...)` / `__import__(...)`, else None."""
  function = node.func
  name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
  if name in ("import_module", "__import__") and node.args and isinstance(
      node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
    return node.args[0].value
  return None


def imports_of(module: str, source: str, is_package: bool, known) -> list:
  """[(imported kmax_tf module, line)] of every import in `source`, at any depth.

  `from a import b` imports `a.b` when that is a module (`known`), else `a`.
  """
  found = []

  def add(name, line):
    if name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + "."):
      found.append((name, line))

  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name, node.lineno)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
          package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
      for alias in node.names:
        candidate = f"{base}.{alias.name}"
        add(candidate if candidate in known else base, node.lineno)
    elif isinstance(node, ast.Call):
      name = _import_module_name(node)
      if name:
        add(name, node.lineno)
  return found


def _cycles(graph: dict) -> list:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for successor in sorted(graph.get(node, ())):
      if successor not in index:
        visit(successor)
        low[node] = min(low[node], low[successor])
      elif successor in on_stack:
        low[node] = min(low[node], index[successor])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1 or node in graph.get(node, ()):
        components.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return sorted(components)


def check(modules: dict) -> list:
  """Problems of `modules` (`{name: (path, source)}`) against `LAYERS`, one line each."""
  known = set(modules) | {entry for _, entries in LAYERS for entry in entries
                          if not entry.endswith(".*")}
  problems, graph = [], {}
  for module, (path, source) in sorted(modules.items()):
    layer = layer_of(module)
    if layer is None:
      problems.append(f"{module} ({path}) is in no layer: place it in LAYERS")
      continue
    is_package = pathlib.Path(path).name == "__init__.py"
    for target, line in imports_of(module, source, is_package, known):
      graph.setdefault(module, set()).add(target)
      target_layer = layer_of(target)
      if target_layer is None:
        problems.append(f"{path}:{line}: {module} imports {target}, which is in no layer")
      elif target_layer < layer:
        problems.append(f"{path}:{line}: {module} ({LAYERS[layer][0]}) imports {target} "
                        f"({LAYERS[target_layer][0]}), a layer above it")
  for component in _cycles(graph):
    problems.append("import cycle among " + ", ".join(component))
  return problems


def test_the_table_places_each_name_once():
  entries = [entry for _, layer in LAYERS for entry in layer]
  assert len(entries) == len(set(entries))


def test_the_scan_covers_the_mapped_directories():
  modules = repository_modules()
  assert modules["kmax_tf.trainer.train"][0] == REPO / "trainer" / "train.py"
  assert modules["kmax_tf.evaluation"][0] == REPO / "evaluation" / "__init__.py"
  assert modules["kmax_tf.model.layers.conv"][0] == REPO / "kmax_tf/model/layers/conv.py"
  files = [path for directory in ("kmax_tf", "trainer", "evaluation", "configs")
           for path in (REPO / directory).rglob("*.py")]
  assert len(modules) == len(files)


def test_no_module_imports_from_a_layer_above_it():
  problems = check(repository_modules())
  assert not problems, "\n".join(problems)


def _synthetic(**sources):
  """Modules named with `__` for dots, e.g. `kmax_tf__model__builder="..."`."""
  modules = {}
  for name, source in sources.items():
    dotted = name.replace("__", ".")
    modules[dotted] = (f"{dotted.replace('.', '/')}.py", source)
  return modules


@pytest.mark.parametrize("source,target", [
    ("from kmax_tf.trainer import train_lib\n", "kmax_tf.trainer.train_lib"),
    ("def f():\n  from kmax_tf.trainer import train_lib\n", "kmax_tf.trainer.train_lib"),
    ("import kmax_tf.export\n", "kmax_tf.export"),
    ("def f():\n  import kmax_tf.cli as c\n", "kmax_tf.cli"),
    ("from ..evaluation import evaluator\n", "kmax_tf.evaluation.evaluator"),
    ("from ..trainer.checkpoints import ResilientCheckpointManager\n",
     "kmax_tf.trainer.checkpoints"),
    ("import importlib\nM = importlib.import_module('kmax_tf.predict')\n", "kmax_tf.predict"),
], ids=["from", "from_in_function", "import", "import_in_function", "relative",
        "relative_name_from_module", "import_module"])
def test_the_checker_reports_an_upward_import(source, target):
  modules = _synthetic(kmax_tf__model__builder=source, kmax_tf__trainer__train_lib="")
  [problem] = check(modules)
  assert problem.startswith("kmax_tf/model/builder.py:")
  assert f"kmax_tf.model.builder (library) imports {target} (" in problem
  assert problem.endswith("a layer above it")


@pytest.mark.parametrize("importer,source,target", [
    ("kmax_tf.trainer.train", "from kmax_tf.commands.config import parse_overrides\n",
     "kmax_tf.commands.config"),
    ("kmax_tf.evaluation.evaluator", "from kmax_tf.trainer import summaries\n",
     "kmax_tf.trainer.summaries"),
    ("kmax_tf.convert_deeplab2", "from kmax_tf.trainer import checkpoints\n",
     "kmax_tf.trainer.checkpoints"),
    ("kmax_tf.config", "def f():\n  from kmax_tf.model import builder\n", "kmax_tf.model.builder"),
])
def test_the_checker_reports_imports_from_each_higher_layer(importer, source, target):
  modules = _synthetic(**{importer.replace(".", "__"): source, target.replace(".", "__"): ""})
  [problem] = check(modules)
  assert f" {importer} (" in problem and f" imports {target} (" in problem


def test_the_checker_accepts_downward_and_same_layer_imports():
  modules = _synthetic(
      kmax_tf__export="from kmax_tf.model import builder\nfrom kmax_tf import postprocess\n",
      kmax_tf__model__builder="from kmax_tf import datasets\nfrom . import heads\n",
      kmax_tf__model__heads="import kmax_tf.ops\n",
      kmax_tf__trainer__train_lib="def f():\n  from kmax_tf.evaluation import evaluator\n")
  assert check(modules) == []


def test_the_checker_reports_unplaced_modules_and_imports():
  modules = _synthetic(kmax_tf__serving="", kmax_tf__geometry="import kmax_tf.later\n")
  assert check(modules) == [
      "kmax_tf/geometry.py:1: kmax_tf.geometry imports kmax_tf.later, which is in no layer",
      "kmax_tf.serving (kmax_tf/serving.py) is in no layer: place it in LAYERS"]


def test_the_checker_reports_a_cycle_within_a_layer():
  modules = _synthetic(kmax_tf__geometry="from kmax_tf import images\n",
                       kmax_tf__images="def f():\n  import kmax_tf.geometry\n")
  assert check(modules) == ["import cycle among kmax_tf.geometry, kmax_tf.images"]
