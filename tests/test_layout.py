"""The shape of the package, as the architecture asks: state is passed whole (a request object, a run),
not as long parameter lists."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "stnexp"
MAX_PARAMETERS = 6


def test_no_function_in_stnexp_takes_more_than_six_parameters():
    """A command of the CLI is the one exception: Typer reads its flags from its parameters, one each."""
    wide = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if any(
                getattr(getattr(d, "func", None), "attr", "") == "command" for d in getattr(node, "decorator_list", [])
            ):
                continue
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
BOTTOM = {"errors", "seeds", "device", "geometry", "pose", "requests"}
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


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 50  # from `def` to its last line, docstring included


def test_no_module_over_450_lines_and_no_function_over_50():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {size} lines")
    assert not long


def _imports() -> dict[str, set[str]]:
    """Module -> the stnexp modules it imports, at the top or inside a function (a lazy import is still a
    dependency), `from stnexp.x import y` counted as stnexp.x.y where y is a module."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            graph[module] |= {f for f in found if f in modules and f not in (module, "stnexp")}
    return graph


def test_no_import_cycle_at_the_top_or_inside_functions():
    graph = _imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target == path[0]:
                cycles.append(" -> ".join(path + [target]))
            elif target not in path and target > path[0]:  # each cycle once, from its smallest module
                visit(target, path + [target])

    for module in sorted(graph):
        visit(module, [module])
    assert not cycles
