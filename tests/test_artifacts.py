"""The table of a run's files (artifacts.py): what train, eval, report and --force ask."""

import importlib
import json

import pytest

from stnexp.errors import UserError
from stnexp.store import artifacts, runs


@pytest.mark.parametrize("kind", artifacts.RUN + artifacts.SWEEP, ids=lambda a: a.name)
def test_every_artifact_names_a_writer_and_reader_that_exist(kind):
    for named in [kind.writer, kind.reader]:
        if named is None or named.startswith("("):  # None: nothing reads it back; "(...)": an older version wrote it
            continue
        for one in named.split(", "):
            module, function = one.rsplit(".", 1)
            target = importlib.import_module(f"stnexp.{module}")
            for part in function.split("."):
                target = getattr(target, part)
            assert callable(target), one


def test_every_file_a_run_writes_is_in_the_table_and_force_clears_exactly_those(tiny_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from stnexp.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert CliRunner().invoke(app, ["eval", str(run), "--sweep", "rotation=0:90:90", "--device", "cpu"]).exit_code == 0
    (run / "notes.txt").write_text("the user's own")
    on_disk = {p for p in run.rglob("*") if p.is_file()} - {run / "notes.txt"}
    assert on_disk <= set(runs.written_files(run))
    runs.clear(run, remove_dir=False)
    assert sorted(p.name for p in run.rglob("*")) == [".stnexp-lock", "notes.txt"]


def test_a_kind_s_path_and_the_files_found_agree(tiny_run):
    found = artifacts.CHECKPOINT.found(tiny_run)
    assert artifacts.CHECKPOINT.path(tiny_run, variant="rts", model="st-cnn", seed=0, kind="best") in found
    assert len(found) == 4
    assert artifacts.CURVES.paths(tiny_run, variant="rts", seed=0) == [
        tiny_run / "curves/rts/s0.png",
        tiny_run / "curves/rts/s0.pdf",
    ]
    assert (
        artifacts.CURVES.keys == ("variant", "seed") and artifacts.CURVES.folder == "curves" and artifacts.CURVES.figure
    )


def test_results_and_metrics_are_read_in_one_place(tiny_run, tmp_path):
    assert artifacts.read_results(tiny_run) == json.loads((tiny_run / "results.json").read_text())
    rows = artifacts.read_metrics(tiny_run)
    assert [r["epoch"] for r in rows if r["model"] == "cnn"] == ["1", "2"]
    assert artifacts.read_results(tmp_path) is None and artifacts.read_metrics(tmp_path) is None
    (tmp_path / "results.json").write_text('[{"model": 1}]')
    with pytest.raises(UserError, match="not a results table written by stnexp"):
        artifacts.read_results(tmp_path)
