"""Outputs never destroy what is not theirs, and bad options are one line naming the option (exit 2).

Every case here was found by a careful or hostile user: a report that deleted the model it read, a fit that
emptied an ordinary folder or renamed its own input away, a failure after the whole fit that named a temp
path, a stray temp file.  The property-based harness over random file trees is in ``test_fuzz.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from gaelp_bayes import cache, cli, data, model


def one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for name in names:
        assert name in err, err
    assert "Traceback" not in err and "/tmp/." not in err
    return err


@pytest.fixture
def no_sampling(monkeypatch):
    """A fit that must not start: the output check comes first."""
    def fail(*args, **kwargs):
        raise AssertionError("the fit started before the output was checked")
    monkeypatch.setattr(model, "fit", fail)


def tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ----- fit --------------------------------------------------------------------------------------------------
def test_fit_refuses_an_ordinary_folder(fitted, tmp_path, capsys, no_sampling):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    before = tree_state(tmp_path)
    assert cli.main(["fit", str(fitted.train_csv), "--out", str(project)]) == 2
    one_error_line(capsys, "--out", "--overwrite")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_fit_never_writes_over_its_input(fitted, tmp_path, capsys, no_sampling, overwrite):
    csv = tmp_path / "data" / "w.csv"
    csv.parent.mkdir()
    shutil.copy(fitted.train_csv, csv)
    before = tree_state(tmp_path)
    assert cli.main(["fit", str(csv), "--out", str(csv), *overwrite]) == 2
    one_error_line(capsys, "--out", "input")
    assert cli.main(["fit", str(csv), "--out", str(csv.parent), *overwrite]) == 2  # the folder holding the input
    one_error_line(capsys, "--out", "input")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_fit_never_replaces_the_working_folder_or_one_above_it(fitted, tmp_path, capsys, no_sampling, monkeypatch,
                                                                 out):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree_state(tmp_path)
    assert cli.main(["fit", str(fitted.train_csv), "--out", out, "--overwrite"]) == 2
    one_error_line(capsys, "--out", "working folder")
    assert tree_state(tmp_path) == before


def test_fit_refuses_an_existing_model_without_overwrite(fitted, tmp_path, capsys, no_sampling):
    target = tmp_path / "m"
    shutil.copytree(fitted.path, target)
    before = tree_state(tmp_path)
    assert cli.main(["fit", str(fitted.train_csv), "--out", str(target)]) == 2
    one_error_line(capsys, "--out", "model", "--overwrite")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("where", ["under_a_file", "read_only_file_system"])
def test_fit_checks_the_destination_before_fitting(fitted, tmp_path, capsys, no_sampling, where):
    if where == "under_a_file":
        out = tmp_path / "a_file" / "model"
        (tmp_path / "a_file").write_text("x")
    else:
        out = Path("/proc/gaelp_bayes_model")  # not writable even for root
    before = tree_state(tmp_path)
    assert cli.main(["fit", str(fitted.train_csv), "--out", str(out)]) == 2
    one_error_line(capsys, "--out", str(out))
    assert tree_state(tmp_path) == before


def test_fit_with_overwrite_replaces_a_model(fitted, tmp_path, instant_fit):
    target = tmp_path / "m"
    shutil.copytree(fitted.path, target)
    assert cli.main(["fit", str(fitted.train_csv), "--out", str(target), "--overwrite", "--quiet"]) in (0, 4)
    assert json.loads((target / "manifest.json").read_text())["fit_seconds"] == 1.23
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folder left


# ----- predict and windows ----------------------------------------------------------------------------------
def test_predict_refuses_its_input_an_existing_file_and_a_folder(fitted, tmp_path, capsys):
    windows = tmp_path / "holdout.csv"
    shutil.copy(fitted.holdout_csv, windows)
    (tmp_path / "old.csv").write_text("keep me")
    (tmp_path / "folder").mkdir()
    before = tree_state(tmp_path)
    for out, words in ((windows, ("--out", "input")), (tmp_path / "old.csv", ("--out", "--overwrite")),
                       (tmp_path / "folder", ("--out", "folder")), (fitted.path, ("--out", "input"))):
        assert cli.main(["predict", str(fitted.path), str(windows), "--out", str(out), "--force"]) == 2
        one_error_line(capsys, *words)
    assert tree_state(tmp_path) == before  # nothing replaced, no stray temp file
    assert cli.main(["predict", str(fitted.path), str(windows), "--out", str(tmp_path / "old.csv"), "--force",
                     "--overwrite"]) == 0
    assert len(pd.read_csv(tmp_path / "old.csv")) == len(fitted.holdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "holdout.csv", "old.csv"]


def test_windows_refuses_its_input(tmp_path, capsys):
    raw = tmp_path / "events.csv"
    raw.write_text("t,y\n2026-01-05T00:10:00Z,1\n2026-01-05T02:10:00Z,0\n")
    before = tree_state(tmp_path)
    assert cli.main(["windows", str(raw), "--time", "t", "--outcome", "y", "--out", str(raw), "--overwrite"]) == 2
    one_error_line(capsys, "--out", "input")
    assert tree_state(tmp_path) == before


def test_outputs_refuse_special_files_and_paths_inside_a_model_cache(fitted, tmp_path, capsys):
    """``predict ... --out /dev/null --overwrite``, run as root, replaced the device with a regular file, and
    ``windows ... --out MODEL/runtime/cvr.npy --overwrite`` overwrote a model's runtime file: neither may be
    written, whatever the flags."""
    import os
    import stat

    model_copy = tmp_path / "m"
    shutil.copytree(fitted.path, model_copy)
    raw = tmp_path / "events.csv"
    raw.write_text("t,y\n2026-01-05T00:10:00Z,1\n2026-01-05T02:10:00Z,0\n")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    before = tree_state(model_copy)
    for out, words in ((Path("/dev/null"), ("--out", "special file")), (pipe, ("--out", "special file")),
                       (model_copy / "runtime" / "cvr.npy", ("--out", "inside the model cache")),
                       (model_copy / "extra.csv", ("--out", "inside the model cache"))):
        assert cli.main(["predict", str(fitted.path), str(fitted.holdout_csv), "--out", str(out), "--force",
                         "--overwrite"]) == 2
        one_error_line(capsys, *words)
        assert cli.main(["windows", str(raw), "--time", "t", "--outcome", "y", "--out", str(out), "--overwrite"]) == 2
        one_error_line(capsys, *words)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert tree_state(model_copy) == before


def test_simulate_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    """``simulate --out EXISTING_DIR`` overwrote its results without ``--overwrite``."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    assert cli.main(["simulate", "--out", str(mine), "--days", "1"]) == 2
    one_error_line(capsys, "--out", "--overwrite")
    assert (mine / "summary.md").read_text() == "my notes"


# ----- report -----------------------------------------------------------------------------------------------
def test_report_run_beside_its_model_leaves_the_model_alone(fitted, tmp_path, monkeypatch):
    """`report models/demo --out demo.html` from models/ used to replace the model folder with its figures."""
    models = tmp_path / "models"
    shutil.copytree(fitted.path, models / "demo")
    monkeypatch.chdir(models)
    assert cli.main(["report", "demo", "--out", "demo.html", "--budget", "50", "--campaign", "campaign_01", "--date",
                     "2026-02-10"]) == 0
    cache.read_manifest(models / "demo")  # intact: every checksum still matches
    assert (models / "demo.html").is_file() and len(list((models / "demo_figures").glob("*.png"))) == 9  # test_report.FIGURES


def test_report_refuses_a_figure_folder_that_is_not_its_own(fitted, tmp_path, capsys):
    shutil.copytree(fitted.path, tmp_path / "r_figures")  # a model whose name is the figure folder's
    (tmp_path / "x_figures").mkdir()
    (tmp_path / "x_figures" / "mine.txt").write_text("keep")
    (tmp_path / "y.html").write_text("an older page")
    before = tree_state(tmp_path)
    for out, words in (("r.html", ("r_figures", "model")), ("x.html", ("x_figures", "--overwrite")),
                       ("y.html", ("--out", "--overwrite"))):
        assert cli.main(["report", str(fitted.path), "--out", str(tmp_path / out), "--budget", "50", "--date",
                         "2026-02-10"]) == 2
        one_error_line(capsys, *words)
    assert tree_state(tmp_path) == before


def rename_campaign(src: Path, dst: Path, old: str, new: str) -> Path:
    """A consistent copy of a cache with one campaign renamed (posterior and manifest; the runtime files
    hold no names)."""
    shutil.copytree(src, dst)
    tree = xr.load_datatree(dst / cache.POSTERIOR, engine="h5netcdf")
    rename = {n: tree[n].to_dataset() for n in tree.groups if n != "/" and "campaign" in tree[n].to_dataset().coords}
    for name, ds in rename.items():
        tree[name] = ds.assign_coords(campaign=[new if c == old else c for c in ds["campaign"].values.tolist()])
    tree.to_netcdf(dst / cache.POSTERIOR, engine="h5netcdf")
    manifest = json.loads((dst / cache.MANIFEST).read_text())
    manifest["campaigns"] = [new if c == old else c for c in manifest["campaigns"]]
    manifest["files"][cache.POSTERIOR] = cache._sha256(dst / cache.POSTERIOR)
    cache.write_manifest(dst, manifest)
    return dst


def test_report_on_a_campaign_name_with_dollar_signs(fitted, tmp_path):
    """A campaign named `Promo $x^^y$` made matplotlib parse mathtext: the report failed with 'error: '."""
    name = "Promo $x^^y$"
    model_dir = rename_campaign(fitted.path, tmp_path / "m", "campaign_01", name)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(model_dir), "--out", str(out), "--campaign", name, "--budget", "50", "--date",
                     "2026-02-10"]) == 0
    assert "Promo $x^^y$" in out.read_text(encoding="utf-8")


# ----- options ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,option", [
    (["allocate", "m", "--budget", "inf"], "--budget"), (["allocate", "m", "--budget", "nan"], "--budget"),
    (["allocate", "m", "--budget", "0"], "--budget"), (["allocate", "m", "--budget", "-3"], "--budget"),
    (["allocate", "m", "--budget", "10", "--max-share", "nan"], "--max-share"),
    (["allocate", "m", "--budget", "10", "--max-share", "0"], "--max-share"),
    (["allocate", "m", "--budget", "10", "--headroom", "nan"], "--headroom"),
    (["allocate", "m", "--budget", "10", "--tolerance", "2"], "--tolerance"),
    (["allocate", "m", "--budget", "10", "--exploration", "1"], "--exploration"),
    (["allocate", "m", "--budget", "10", "--min-per-hour", "inf"], "--min-per-hour"),
    (["allocate", "m", "--budget", "10", "--max-per-hour", "nan"], "--max-per-hour"),
    (["allocate", "m", "--budget", "10", "--target-cpa", "-1"], "--target-cpa"),
    (["report", "m", "--budget", "inf"], "--budget"), (["report", "m", "--budget", "nan"], "--budget"),
    (["predict", "m", "w.csv", "--out", "p.csv", "--interval", "1.5"], "--interval"),
    (["fit", "w.csv", "--out", "m", "--draws", "0"], "--draws"),
    (["fit", "w.csv", "--out", "m", "--chains", "-1"], "--chains"),
    (["fit", "w.csv", "--out", "m", "--runtime-draws", "nan"], "--runtime-draws"),
    (["simulate", "--budget-share", "nan"], "--budget-share"),
    (["allocate", "m", "--budget", "10", "--no-such-option"], "--no-such-option"),
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys):
    assert cli.main(argv) == 2
    one_error_line(capsys, option)


def test_the_allocation_api_names_a_bad_budget(fitted):
    from gaelp_bayes.allocate import AllocationError, allocate

    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(AllocationError, match="budget"):
            allocate(str(fitted.path), bad, campaign="campaign_01", force=True, date="2026-02-10")
    with pytest.raises(AllocationError, match="max_share"):
        allocate(str(fitted.path), 10.0, campaign="campaign_01", force=True, max_share=float("nan"), date="2026-02-10")


# ----- data -------------------------------------------------------------------------------------------------
def test_a_year_out_of_range_names_the_row_and_column(tmp_path, capsys):
    w = tmp_path / "w.csv"
    w.write_text("timestamp,clicks,conversions\n2026-01-05T00:00:00Z,3,1\n2300-01-05T01:00:00Z,3,1\n")
    assert cli.main(["fit", str(w), "--out", str(tmp_path / "m")]) == 2
    one_error_line(capsys, "row 2", "'timestamp'")
    raw = tmp_path / "events.csv"
    raw.write_text("t,y\n2026-01-05T00:10:00Z,1\n2300-01-05T02:10:00Z,0\n")
    assert cli.main(["windows", str(raw), "--time", "t", "--outcome", "y", "--out", str(tmp_path / "o.csv")]) == 2
    one_error_line(capsys, "row 2", "'t'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "w.csv"]


def test_an_isolated_old_event_does_not_fill_decades_with_empty_windows(tmp_path, capsys):
    raw = tmp_path / "events.csv"
    raw.write_text("t,y\n1970-01-01T00:00:00Z,0\n2026-01-05T00:10:00Z,1\n2026-01-05T02:10:00Z,0\n")
    out = tmp_path / "w.csv"
    assert cli.main(["windows", str(raw), "--time", "t", "--outcome", "y", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "1970-01-01" in err and "row 1" in err
    assert len(pd.read_csv(out)) == 4  # the 1970 hour and 2026's three hours, not 490,000 empty windows
    data.load_windows(out)


def test_fit_cached_reuse_replaces_a_model_cache_but_never_a_folder_of_other_files(fitted, tmp_path, instant_fit):
    """``pipeline.fit_cached(reuse=True)`` refreshes a stale model cache, and refuses an unrelated folder."""
    from gaelp_bayes import pipeline
    from gaelp_bayes.errors import UsageError

    cells = data.aggregate(data.load_windows(fitted.train_csv))
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        pipeline.fit_cached(cells, mine, reuse=True)
    assert (mine / "keep.txt").read_text() == "mine"
    stale = tmp_path / "m"
    pipeline.fit_cached(cells, stale, reuse=True)
    (stale / "posterior.nc").write_bytes(b"tampered")  # no longer an intact fit: refitted, replaced
    assert pipeline.fit_cached(cells, stale, reuse=True).fit is not None
    assert pipeline.fit_cached(cells, stale, reuse=True).fit is None  # intact: reused
