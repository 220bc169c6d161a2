"""The package surface: lazy imports and the names the README uses."""

import subprocess
import sys

import pytest


def test_import_loads_nothing_heavy():
    code = (
        "import sys, int8calib; "
        "print(sorted(m for m in ('onnxruntime', 'numba', 'matplotlib', 'onnx', 'PIL', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize(
    "name", ["calibrate", "collect", "inspect", "read_cache", "write_cache", "Preprocess", "EntropyCalibrator2",
             "EntropyCalibrator", "MinMaxCalibrator", "LegacyCalibrator", "Int8CalibError"],
)
def test_public_names_resolve(name):
    import int8calib

    assert getattr(int8calib, name) is not None


def test_subpackages_are_attributes():
    import int8calib

    assert callable(int8calib.zoo.efficientnet_lite0)
    assert callable(int8calib.evaluate.evaluate)
    assert "entropy2" in int8calib.methods.available()
    with pytest.raises(AttributeError):
        int8calib.no_such_thing


def test_malloc_arena_cap_applies_on_glibc():
    import platform

    from int8calib.util.memory import limit_malloc_arenas

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is expected


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    import io

    from int8calib.util import log

    items = [1, 2, 3]
    monkeypatch.setattr(log.sys, "stderr", io.StringIO())  # not a terminal
    log.configure(quiet=False)
    assert log.progress(items) is items

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(log.sys, "stderr", Terminal())
    bar = log.progress(items, total=3, desc="x")
    assert bar is not items and list(bar) == items
    log.configure(quiet=True)
    assert log.progress(items) is items
    log.configure()


# The collection stage sits below the calibrator and the API: it may import only these.
COLLECTION_IMPORTS = {"sources", "batching", "runner", "stats", "methods", "util", "errors", "collection"}


def _int8calib_imports(path, root=None):
    """Every int8calib module ``path`` imports, at any depth (functions, TYPE_CHECKING blocks too).

    ``root`` is the folder holding the ``int8calib`` package (default: ``path``'s grandparent)."""
    import ast

    parts = path.relative_to(root or path.parents[1]).with_suffix("").parts
    package = ".".join(parts[:-1]) if root else "int8calib." + ".".join(parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.update(f"{module}.{a.name}" for a in node.names)  # a name may be a submodule
    return {m for m in found if m.split(".")[0] == "int8calib"}


def test_collection_imports_downward_only():
    from pathlib import Path

    import int8calib

    folder = Path(int8calib.__file__).parent / "collection"
    modules = sorted(folder.glob("*.py"))
    assert {p.name for p in modules} >= {"__init__.py", "calibration_pass.py", "gather.py", "steps.py", "warmup.py", "workers.py"}
    for path in modules:
        imported = _int8calib_imports(path)
        assert imported, path
        upward = sorted(m for m in imported if m.split(".")[1] not in COLLECTION_IMPORTS)
        assert not upward, f"collection/{path.name} imports {upward}"


@pytest.mark.parametrize("module", ["collection", "collection.calibration_pass", "collection.gather",
                                    "collection.steps", "collection.warmup", "collection.workers"])
def test_collection_modules_import_first_without_the_calibrator(module):
    """Imported first in a fresh interpreter (where a cycle would fail), nothing above the stage loads."""
    code = (
        f"import sys, int8calib.{module}; "
        "print(sorted(m for m in ('int8calib.calibrator', 'int8calib.api', 'int8calib.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def _import_graph(root):
    """{module: the package modules it imports anywhere in its source}, for the package under ``root``."""
    modules = {}
    for path in sorted((root / "int8calib").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _int8calib_imports(path, root):
            while imported not in modules:  # `from .x import f` names f; the module is x
                imported = imported.rpartition(".")[0]
            targets.add(imported)
        graph[name] = targets - {name}
    return graph


def _a_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    """No module imports one that imports it back, at any depth: lazy imports in functions count too."""
    from pathlib import Path

    import int8calib

    root = Path(int8calib.__file__).parents[1]
    graph = _import_graph(root)
    assert {"int8calib.api", "int8calib.cachefiles.to_qdq", "int8calib.cli.inspect"} <= set(graph)
    assert "int8calib.cachefiles.read" in graph["int8calib.cachefiles.to_qdq"]  # edges resolve to modules
    cycle = _a_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_check_sees_a_lazy_cycle(tmp_path):
    package = tmp_path / "int8calib"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import g\n")
    (package / "a.py").write_text("from .sub import g\n")
    (package / "sub" / "b.py").write_text("def g():\n    from ..a import f\n")
    assert _a_cycle(_import_graph(tmp_path)) == ["int8calib.a", "int8calib.sub", "int8calib.sub.b", "int8calib.a"]
