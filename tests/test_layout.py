"""The shape of the package, as the architecture asks: state is passed whole (a request object, a run),
not as long parameter lists."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "stnexp"
MAX_PARAMETERS = 6


def test_no_function_in_stnexp_takes_more_than_six_parameters():
    wide = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = node.args
                names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs] + [
                    p.arg for p in (a.vararg, a.kwarg) if p
                ]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    wide.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {getattr(node, 'name', 'lambda')} "
                        f"({len(names)})"
                    )
    assert not wide


def test_the_code_passes_the_linter_and_keeps_its_format_and_line_length():
    import subprocess
    import sys

    root = PACKAGE.parent
    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


# what each part of the package may import (its folder's __init__ says the same), lazily or not
BOTTOM = {"errors", "seeds", "device", "geometry", "pose"}
MAY_IMPORT = {
    "bottom": BOTTOM,
    "models": BOTTOM | {"models"},
    "config": BOTTOM | {"config", "models"},
    "data": BOTTOM | {"data", "config"},
    "store": BOTTOM | {"store", "config"},
    "results": BOTTOM | {"results", "config", "data", "models", "store"},
    "training": BOTTOM | {"training", "config", "data", "models", "store", "results"},
    "top": BOTTOM | {"config", "data", "models", "store", "results", "training", "cli", "api"},
}


def _part(module: str) -> str:
    """The part of the package a module `stnexp.a.b` belongs to: its folder, or its own name at the top."""
    return module.split(".")[1] if module.count(".") else "top"


def test_each_folder_imports_only_what_its_init_says_it_may():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts
        part = parts[1] if len(parts) > 2 else ("bottom" if parts[1] in BOTTOM else "top")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [
                    f"stnexp.{a.name}" for a in node.names if node.module == "stnexp" and a.name[0] != "_"
                ]
            for name in names:
                if name.startswith("stnexp.") and name.split(".")[1] not in MAY_IMPORT[part]:
                    wrong.append(f"{'/'.join(parts)}.py ({part}) imports {name}")
    assert not wrong
