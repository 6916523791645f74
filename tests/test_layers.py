"""The package's import graph: no circles, and imports only point down the layers.

Every `import` and `from ... import` of srdd_jax modules is read from the source (module level
and inside functions alike). Layers, bottom to top (docs: ../shared/docs/architecture.md):

  0  shared ops and utilities: scales, parallel, fingerprints, errors, config_diff, progress,
     console, weights_io, image_files, image_grids, compilation_cache, cpu_kernels, host_memory,
     spec_fields, tokenizer/resize
  1  losses (token losses shared by training and evaluation), preemption (stop requests),
     workdir_lock (one run per workdir)
  2  checkpoints (directories of saved trees, with integrity records)
  3  the two models: tokenizer/, transformer/ (each with its spec), and the package root
  4  models (ModelSpec and the Model bundle)
  5  saved_models (model directories)
  6  data/
  7  sampling/ and training/ (side by side: neither imports the other)
  8  evaluation/
  9  convert/ (PyTorch checkpoints -> model directories)
  10 pretrained (released models by name, through convert)
  11 modes/ (one module per mode, the registry, and the helpers specs, model_resolver, workdir)
     and experiment_config: the only layer that reads ConfigDicts
  12 experiment (dispatch)
  13 main (the command line), app (the Gradio page)

An import may go to a lower layer, or stay inside its own group (a package, or a module).
Below layer 11 no module imports ml_collections or names ConfigDict (settings arrive as typed
specs), and no mode imports another mode. Run `python -m pytest tests/test_layers.py` to check.
"""

import ast
import pathlib

import pytest

from srdd_jax.modes import registry

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "srdd_jax"

LAYERS = {
    "srdd_jax.scales": 0, "srdd_jax.parallel": 0, "srdd_jax.fingerprints": 0, "srdd_jax.errors": 0,
    "srdd_jax.config_diff": 0, "srdd_jax.progress": 0, "srdd_jax.console": 0,
    "srdd_jax.weights_io": 0, "srdd_jax.compilation_cache": 0, "srdd_jax.tokenizer.resize": 0,
    "srdd_jax.image_files": 0, "srdd_jax.cpu_kernels": 0, "srdd_jax.host_memory": 0,
    "srdd_jax.image_grids": 0, "srdd_jax.spec_fields": 0,
    "srdd_jax.losses": 1, "srdd_jax.preemption": 1, "srdd_jax.workdir_lock": 1,
    "srdd_jax.checkpoints": 2,
    "srdd_jax": 3, "srdd_jax.tokenizer": 3, "srdd_jax.transformer": 3,
    "srdd_jax.models": 4,
    "srdd_jax.saved_models": 5,
    "srdd_jax.data": 6,
    "srdd_jax.sampling": 7, "srdd_jax.training": 7,
    "srdd_jax.evaluation": 8,
    "srdd_jax.convert": 9,
    "srdd_jax.pretrained": 10,
    "srdd_jax.modes": 11, "srdd_jax.experiment_config": 11,
    "srdd_jax.experiment": 12,
    "srdd_jax.main": 13, "srdd_jax.app": 13,
}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """srdd_jax modules that `name` imports (an imported name that is a module counts as it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "srdd_jax")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] == "srdd_jax":
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                             for a in node.names)
    found.discard(name)
    return found


def _group(name: str) -> str:
    """The longest LAYERS key that is `name` or a package above it."""
    candidates = [key for key in LAYERS if name == key or name.startswith(key + ".")]
    if not candidates:
        raise KeyError(f"{name} has no layer: add it to LAYERS in tests/test_layers.py")
    return max(candidates, key=len)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        _group(name)


def test_imports_only_point_down(graph):
    upward = []
    for name, targets in graph.items():
        group = _group(name)
        for target in targets:
            other = _group(target)
            if other != group and LAYERS[other] >= LAYERS[group]:
                upward.append(f"{name} (layer {LAYERS[group]}) -> {target} (layer {LAYERS[other]})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_circles(graph):
    state, stack, circles = {}, [], []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The same reading finds a planted upward import (models -> modes)."""
    planted = tmp_path / "models.py"
    planted.write_text("from srdd_jax.modes import train\n\ndef f():\n    import srdd_jax.main\n")
    found = _imports("srdd_jax.models", planted, _modules())
    assert found == {"srdd_jax.modes.train", "srdd_jax.main"}
    assert LAYERS[_group("srdd_jax.modes.train")] > LAYERS[_group("srdd_jax.models")]


CONFIG_LAYER = LAYERS["srdd_jax.modes"]
MODE_HELPERS = {"srdd_jax.modes.specs", "srdd_jax.modes.model_resolver", "srdd_jax.modes.workdir",
                "srdd_jax.modes.registry", "srdd_jax.modes"}


def _config_dict_uses(path: pathlib.Path) -> list[str]:
    """Where a module imports ml_collections or names ConfigDict (in code, not in docstrings)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "ml_collections"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ml_collections":
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id == "ConfigDict":
            found.append(f"line {node.lineno}: ConfigDict")
        elif isinstance(node, ast.Attribute) and node.attr == "ConfigDict":
            found.append(f"line {node.lineno}: .ConfigDict")
    return found


def test_no_config_dict_below_the_modes():
    """Settings reach the library as typed specs: below the config layer no module imports
    ml_collections or takes or names a ConfigDict."""
    found = []
    for name, path in _modules().items():
        if LAYERS[_group(name)] < CONFIG_LAYER:
            found += [f"{name} {where}" for where in _config_dict_uses(path)]
    assert not found, "ConfigDicts below modes/:\n" + "\n".join(found)


def test_the_config_dict_check_sees_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('import ml_collections\n\n\ndef f(cfg: ml_collections.ConfigDict):\n'
                       '    """Takes a ConfigDict (a docstring may say so)."""\n')
    assert len(_config_dict_uses(planted)) == 2


def test_no_mode_imports_another(graph):
    modes = {name for name in graph if name.startswith("srdd_jax.modes.")} - MODE_HELPERS
    registered = {module.__name__ for module in registry.MODES.values()}
    assert modes == registered, "every mode module is in modes/registry.py, and only those"
    crossing = [f"{name} -> {target}" for name in sorted(modes) for target in graph[name]
                if target in modes]
    assert not crossing, "modes importing modes:\n" + "\n".join(crossing)
