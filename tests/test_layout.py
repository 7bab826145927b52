"""The layout rules of the repository (docs/contributing.md): every package is a layer and imports point down.

    engine     imports nothing of the project
    datasets   engine
    net        engine
    wsss       engine, datasets
    scripts, tools, benchmarks, tests: any package; nothing imports a stage script or a tool.
"""
import ast
import glob
import os

import pytest

from tests.support import ROOT

ALLOWED = {  # layer -> the project's packages it may import (besides itself)
    "engine": set(),
    "datasets": {"engine"},
    "net": {"engine"},
    "wsss": {"engine", "datasets"},
    "scripts": {"engine", "datasets", "net", "wsss"},
    "tools": {"engine", "datasets", "net", "wsss"},
    "benchmarks": {"engine", "datasets", "net", "wsss"},
    "tests": {"engine", "datasets", "net", "wsss", "tests"},
}
SCRIPT_LINES = 200  # a stage script stays thin: docstring, a few helpers, a run function, main


IGNORED = {"data", "work_dirs", "docs", "configs"}  # folders of data and outputs, not code


def scripts():
    return sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "*.py")))


def code_folders():
    """Every top-level folder of the repository that holds Python files: each must be a known layer."""
    return sorted(entry for entry in os.listdir(ROOT)
                  if os.path.isdir(os.path.join(ROOT, entry)) and not entry.startswith(".") and entry not in IGNORED
                  and glob.glob(os.path.join(ROOT, entry, "**", "*.py"), recursive=True))


def python_files():
    """(layer, path relative to the repository) of every Python file of the project."""
    found = [("scripts", f"{name}.py") for name in scripts()]
    for layer in code_folders():
        for path in sorted(glob.glob(os.path.join(ROOT, layer, "**", "*.py"), recursive=True)):
            found.append((layer, os.path.relpath(path, ROOT)))
    return found


def imported_modules(path):
    """Every module an import statement of the file names (at any depth: in functions too)."""
    with open(os.path.join(ROOT, path)) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; import from the package's full name"
            yield node.module


def project_package(module):
    """The project's package (or stage script) a module name belongs to, or None for a third-party module."""
    top = module.split(".")[0]
    if top in code_folders():
        return top
    return "script" if top in scripts() else None


FILES = python_files()


def test_every_folder_of_code_is_a_known_layer():
    unknown = set(code_folders()) - set(ALLOWED)
    assert not unknown, f"give {sorted(unknown)} a row in ALLOWED here and in docs/contributing.md's layer table"
    assert {layer for layer, _ in FILES} == set(ALLOWED) and {"train_cam", "infer_cam", "eval_cam"} <= set(scripts())


@pytest.mark.parametrize("layer, path", FILES, ids=[path for _, path in FILES])
def test_imports_point_down(layer, path):
    own = path.split(os.sep)[0] if layer != "scripts" else None
    wrong = []
    for module in imported_modules(path):
        package = project_package(module)
        if package is None or package == own:
            continue
        if package == "script":
            wrong.append(f"{module} (a stage script: move what is shared into a package)")
        elif package == "tools":
            wrong.append(f"{module} (a command: move what is shared into a package)")
        elif package not in ALLOWED[layer]:
            wrong.append(f"{module} ({layer} may import {', '.join(sorted(ALLOWED[layer])) or 'nothing of ours'})")
    assert not wrong, f"{path} imports " + "; ".join(wrong)


def test_tools_holds_only_commands():
    for path in glob.glob(os.path.join(ROOT, "tools", "*.py")):
        if os.path.basename(path) == "__init__.py":
            continue
        with open(path) as handle:
            assert 'if __name__ == "__main__":' in handle.read(), f"{path} is not a command"


@pytest.mark.parametrize("name", scripts())
def test_stage_scripts_stay_thin(name):
    with open(os.path.join(ROOT, f"{name}.py")) as handle:
        lines = len(handle.read().splitlines())
    assert lines <= SCRIPT_LINES, f"{name}.py has {lines} lines; move what is not stage-specific into a package"


def test_tests_import_helpers_from_support_not_conftest():
    for layer, path in FILES:
        if layer == "tests":
            assert "conftest" not in set(imported_modules(path)), path
