"""The package's layout as docs/development.md draws it: rooms of at most 8 modules, each saying in two lines what it
is for, the base importing none of them, and DNSD 1.1's seeds.json named only where old folders are read."""
import ast
import glob
import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "DNSD")
ROOMS = sorted(os.path.basename(os.path.dirname(path)) for path in glob.glob(os.path.join(PACKAGE, "*", "__init__.py")))
BASE = ("schema.py", "config.py", "changes.py", "architectures.py", "randomness.py", "invocation.py", "untrusted.py",
        "files.py", "errors.py")


def test_every_room_holds_at_most_8_modules_and_says_in_two_lines_what_it_is_for():
    assert {"training", "runs", "sweeps", "inference", "reporting", "audits", "system", "models", "datasets"} <= \
        set(ROOMS)
    tree = Path(ROOT, "docs", "development.md").read_text()
    for room in ROOMS:
        modules = glob.glob(os.path.join(PACKAGE, room, "*.py"))
        assert len(modules) <= 8, (room, len(modules))
        if room in ("models", "datasets", "configs"):
            continue
        docstring = ast.get_docstring(ast.parse(Path(PACKAGE, room, "__init__.py").read_text()))
        assert docstring and len(docstring.splitlines()) == 2, room
        assert f"\n  {room}/ " in tree, f"docs/development.md's tree lacks {room}/"


def imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_base_the_models_and_the_data_sets_import_no_room_and_no_command():
    above = {f"DNSD.{room}" for room in ROOMS if room not in ("models", "datasets")}
    commands = {f"DNSD.{os.path.basename(path)[:-3]}" for path in glob.glob(os.path.join(PACKAGE, "*.py"))
                if os.path.basename(path) not in BASE and not path.endswith("__init__.py")}
    below = [os.path.join(PACKAGE, name) for name in BASE] + glob.glob(os.path.join(PACKAGE, "models", "*.py")) + \
        glob.glob(os.path.join(PACKAGE, "datasets", "*.py"))
    for path in below:
        for module in imported_modules(path):
            assert not any(module == name or module.startswith(name + ".") for name in above | commands), \
                (os.path.relpath(path, ROOT), module)


def test_the_rooms_read_in_one_order_each_importing_only_those_before_it():
    order = ["models", "datasets", "system", "runs", "training", "inference", "sweeps", "reporting", "audits"]
    assert sorted(order) == ROOMS
    for position, room in enumerate(order):
        for path in glob.glob(os.path.join(PACKAGE, room, "*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "DNSD" and len(parts) > 1 and parts[1] in ROOMS and parts[1] != room:
                    assert order.index(parts[1]) < position, (os.path.relpath(path, ROOT), module)


def test_no_module_of_the_package_exceeds_350_lines():
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        assert len(Path(path).read_text().splitlines()) <= 350, os.path.relpath(path, ROOT)


def test_seeds_json_is_named_only_where_the_folders_of_dnsd_1_1_are_read():
    naming = sorted(os.path.relpath(path, PACKAGE) for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"),
                                                                          recursive=True)
                    if "seeds.json" in Path(path).read_text())
    assert naming == [os.path.join("runs", "folder.py"), os.path.join("sweeps", "grid.py")]
    folder = Path(PACKAGE, "runs", "folder.py").read_text()
    assert [line for line in folder.splitlines() if "seeds.json" in line] == [
        'OLD_SEEDS = "seeds.json"  # DNSD 1.1\'s --seeds folders, read as sweeps without a grid']
    grid = Path(PACKAGE, "sweeps", "grid.py").read_text()
    [reader] = [node for node in ast.parse(grid).body if getattr(node, "name", None) == "read_old_seeds"]
    assert "seeds.json" not in grid.replace(ast.get_source_segment(grid, reader), "")


def test_no_function_of_the_package_exceeds_50_lines():
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 50, (os.path.relpath(path, ROOT), node.name)


def test_the_repository_passes_its_linter():
    """ruff by pyproject.toml's rules, as scripts/lint.sh runs it (and mends what it can with --fix)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# The fixtures that train for seconds, read the real images or start processes: a test taking one is slow.
SLOW_FIXTURES = {"mini_archive", "mini_checkpoint", "mini_run", "honest", "forged", "two_rank_run", "seeds_folder",
                 "reference_run", "resnet20_checkpoint", "two_by_two"}


def test_the_fast_tier_holds_no_test_that_takes_a_slow_fixture(request):
    unmarked = [item.nodeid for item in request.session.items
                if SLOW_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("slow")]
    assert unmarked == [], "mark these @pytest.mark.slow (docs/development.md, Tests)"
