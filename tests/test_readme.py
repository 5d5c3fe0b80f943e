import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_config_reference_is_generated_from_the_config_models():
    ref = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")], capture_output=True, text=True, check=True
    ).stdout
    page = (ROOT / "docs" / "config.md").read_text()
    section = page.split("<!-- config-reference")[1].split("-->", 1)[1].split("<!-- /config-reference -->")[0]
    assert section.strip() == ref.strip(), (
        "docs/config.md's reference is stale: paste `python scripts/config_reference.py`"
    )


def test_the_readme_is_a_users_page_whose_links_lead_somewhere():
    assert len(README.splitlines()) <= 250
    named = set(re.findall(r"\b(docs/[a-z-]+\.md|RESULTS\.md|stnexp/[a-z_/]+\.py|tests/[a-z_]+\.py)", README))
    assert "docs/python-api.md" in named and "docs/config.md" in named
    for path in named:
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("section", ["flags", "files"])
def test_the_flag_and_file_tables_of_the_commands_page_are_generated(section):
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "commands_reference.py"), section],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    marker = {"flags": "flags", "files": "run-directory"}[section]
    page = (ROOT / "docs" / "commands.md").read_text()
    kept = page.split(f"<!-- {marker}:")[1].split("-->", 1)[1].split(f"<!-- /{marker} -->")[0]
    assert kept.strip() == made.strip(), (
        f"docs/commands.md's {marker} table is stale: paste `python scripts/commands_reference.py {section}`"
    )


def test_every_command_option_is_on_the_commands_page():
    """The README is a tour; docs/commands.md documents every flag of every command."""
    from typer.main import get_command

    from stnexp.cli import app

    page = (ROOT / "docs" / "commands.md").read_text()

    def walk(cmd, prefix=""):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{prefix}{name} ")
        for p in getattr(cmd, "params", []):
            for opt in p.opts:
                if opt.startswith("--") and opt != "--help":
                    yield prefix.strip(), opt

    for cmd, opt in walk(get_command(app)):
        assert re.search(re.escape(opt) + r"\b", page), f"{cmd} {opt} is not documented in docs/commands.md"


def test_ci_runs_the_readme_test_command():
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    assert command in README and command in (ROOT / ".ci" / "run").read_text()


FILE_SUFFIXES = (".md", ".json", ".csv", ".png", ".pdf", ".yaml", ".py", ".pt", ".html", ".log", ".sh", ".gz", ".lock")


def _cited_texts():
    """The README, RESULTS.md, every page of docs/ and every docstring of the package."""
    import ast

    for page in [ROOT / "README.md", ROOT / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield page.name, page.read_text()
    for path in sorted((ROOT / "stnexp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if ast.get_docstring(node):
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", ast.get_docstring(node)


def _resolves(ref: str, modules: list[str]) -> bool | None:
    """Whether `a.b.c` names something in stnexp (a module, then attributes), None if `a` is none of its
    modules (torch.compile, say)."""
    import importlib

    parts = ref.split(".")
    for k in range(len(parts), 0, -1):
        head = ".".join(parts[:k])
        found = [m for m in modules if m in (head, f"stnexp.{head}") or m.endswith(f".{head}")]
        for module in found:
            obj = importlib.import_module(module)
            for name in parts[k:]:
                obj = getattr(obj, name, None)
            if obj is not None:
                return True
        if found:
            return False
    return None


def test_every_file_and_code_name_the_docs_and_docstrings_cite_exists():
    """A path (stnexp/..., scripts/..., tests/..., configs/..., docs/...) must be a file, and a `module.name`
    in backticks must be found in the package; config keys (`data.train_size`, `models.NAME.stn`) are
    not code."""
    from stnexp import config as C

    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "stnexp").rglob("*.py")
    ]
    keys = {"data": C.DataConfig.model_fields, "train": C.TrainConfig.model_fields}
    wrong = []
    for where, text in _cited_texts():
        for path in re.findall(r"\b((?:stnexp|scripts|tests|configs|docs)/[\w./-]*\.(?:py|md|yaml|sh))\b", text):
            if not (ROOT / path).exists():
                wrong.append(f"{where}: {path}")
        for ref in re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`", text):
            first, second = ref.split(".")[:2]
            config_key = (first == "models" and not re.match(r"^[A-Z][a-z]", second)) or second in keys.get(first, ())
            if not ref.endswith(FILE_SUFFIXES) and not config_key and _resolves(ref, modules) is False:
                wrong.append(f"{where}: {ref}")
    assert not wrong
