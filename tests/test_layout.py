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
