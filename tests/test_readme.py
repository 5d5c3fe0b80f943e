import re
import subprocess
import sys
from pathlib import Path

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


def test_every_command_option_is_in_the_readme():
    from typer.main import get_command

    from stnexp.cli import app

    def walk(cmd, prefix=""):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{prefix}{name} ")
        for p in getattr(cmd, "params", []):
            for opt in p.opts:
                if opt.startswith("--") and opt != "--help":
                    yield prefix.strip(), opt

    for cmd, opt in walk(get_command(app)):
        assert re.search(re.escape(opt) + r"\b", README), f"{cmd} {opt} is not documented in README.md"


def test_ci_runs_the_readme_test_command():
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    assert command in README and command in (ROOT / ".ci" / "run").read_text()
