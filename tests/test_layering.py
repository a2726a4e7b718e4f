"""The package's imports flow one way: each ddpm module imports only modules below it in LAYERS (so there are no
cycles), and the math core (schedule -> diffusion -> inversion) imports no file format."""
import ast

from conftest import ROOT

# Bottom to top; the README's tour of the code lists the same order.
LAYERS = ["files", "schedule", "unet", "grow", "images", "metrics",  # plumbing, the schedule, the network, pixels
          "diffusion", "inversion", "guidance", "vlb",         # the math
          "checkpoint", "diffusers_io", "trainstate", "models", "data",  # model, training-state and data files
          "evaluate",                                          # held-out figures, sample grids
          "noisemap", "edits",                                 # the noise-map file and what edits it
          "cli", "sample", "verify", "trainer"]                # commands and the training loop
MATH = ["schedule", "diffusion", "inversion"]


def imports(module: str) -> set[str]:
    """The ddpm modules that ddpm/<module>.py imports, at the top or inside functions."""
    tree = ast.parse((ROOT / "ddpm" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found |= {a.name for a in node.names}
            elif node.module and node.module.startswith("ddpm."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ddpm.")}
    return found


def test_every_module_is_placed_in_the_layering():
    on_disk = {p.stem for p in (ROOT / "ddpm").glob("*.py")} - {"__init__"}
    assert on_disk == set(LAYERS), f"unplaced: {on_disk - set(LAYERS)}, gone: {set(LAYERS) - on_disk}"


def test_imports_only_point_down_the_layering():
    upward = [f"{m} imports {d}" for m in LAYERS for d in imports(m) if LAYERS.index(d) >= LAYERS.index(m)]
    assert not upward, upward


def test_the_math_core_imports_no_file_format():
    for m in MATH:
        assert imports(m) <= set(MATH), f"{m} imports {imports(m) - set(MATH)}"


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """Negative control: an upward import in a module is reported."""
    fake = tmp_path / "ddpm"
    fake.mkdir()
    (fake / "schedule.py").write_text("from .edits import shift\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert "edits" in imports("schedule")


def too_long(path, max_function: int = 60, max_class: int = 150) -> list[str]:
    """Functions over `max_function` lines and classes over `max_class` lines (decorators excluded) in one file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        limit = {ast.FunctionDef: max_function, ast.AsyncFunctionDef: max_function, ast.ClassDef: max_class}.get(
            type(node))
        if limit and node.end_lineno - node.lineno + 1 > limit:
            out.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return out


def test_no_function_over_60_lines_and_no_class_over_150_in_the_library_and_scripts(tmp_path):
    files = sorted((ROOT / "ddpm").glob("*.py")) + [ROOT / f for f in ("train.py", "invert.py", "edit.py")]
    assert not [m for f in files for m in too_long(f)]
    long = tmp_path / "long.py"  # negative control
    long.write_text("def f():\n" + "    x = 1\n" * 60)
    assert too_long(long) == ["long.py:1 f (61 lines)"]
