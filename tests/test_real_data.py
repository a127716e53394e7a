"""The real Open Bandit sample: the event-log loader and a fit on it (no spend column)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gaelp_bayes import cli, data
from gaelp_bayes.allocate import AllocationError, allocate
from gaelp_bayes.errors import InputError

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_bandit"
needs_data = pytest.mark.skipif(not ROOT.is_dir(), reason=f"Open Bandit sample not found at {ROOT}")


def test_event_loader_rules():
    events = pd.DataFrame({"t": ["2019-11-24T00:10:00Z", "2019-11-24T03:59:59Z", "2019-11-24T00:30:00+09:00"],
                           "y": [1, 0, 1], "g": ["a", "a", "b"], "cost": [0.5, 0.25, 1.0]})
    w = data.windows_from_events(events, "t", "y", group="g", cost="cost")
    a = w[w["campaign"] == "a"]
    assert list(a["timestamp"]) == [f"2019-11-24T0{h}:00:00Z" for h in range(4)]  # empty hours kept as zeros
    assert list(a["clicks"]) == [1, 0, 0, 1] and list(a["conversions"]) == [1, 0, 0, 0]
    assert a["spend"].sum() == 0.75
    b = w[w["campaign"] == "b"]
    assert list(b["timestamp"]) == ["2019-11-23T15:00:00Z"]  # offsets honoured
    with pytest.raises(InputError, match="row 2, column 'y': outcome must be 0 or 1"):
        data.windows_from_events(events.assign(y=[1, 3, 0]), "t", "y")
    with pytest.raises(InputError, match="no column 'when' for --time"):
        data.windows_from_events(events, "when", "y")
    naive = pd.DataFrame({"t": ["2019-11-24 09:00:00"], "y": [1]})
    assert data.windows_from_events(naive, "t", "y", source_tz="Asia/Tokyo")["timestamp"][0] == "2019-11-24T00:00:00Z"


@needs_data
def test_open_bandit_windows_fit_predict_and_missing_spend(tmp_path, capsys):
    raw = [ROOT / "random" / c / f"{c}.csv" for c in ("all", "men", "women")]
    windows_csv = tmp_path / "windows.csv"
    assert cli.main(["windows", *map(str, raw), "--time", "timestamp", "--outcome", "click",
                     "--out", str(windows_csv)]) == 0
    w = pd.read_csv(windows_csv)
    assert set(w["campaign"]) == {"all", "men", "women"} and w["clicks"].sum() == 30_000
    assert len(w) == 3 * 168  # every hour of the week, empty ones as zero windows
    out = tmp_path / "models" / "ob"
    code = cli.main(["fit", str(windows_csv), "--out", str(out), "--draws", "300", "--tune", "300",
                     "--chains", "2", "--quiet"])
    assert code in (0, 4) and (out / "manifest.json").exists()
    pred = tmp_path / "pred.csv"
    assert cli.main(["predict", str(out), str(windows_csv), "--out", str(pred), "--force"]) == 0
    assert pd.read_csv(pred)["pred_cvr_mean"].between(0.0005, 0.05).all()
    with pytest.raises(AllocationError, match="without a 'spend' column"):
        allocate(str(out), 10, campaign="men", force=True, date="2019-12-01")
    report = tmp_path / "reports" / "ob.html"
    assert cli.main(["report", str(out), "--out", str(report), "--campaign", "men", "--date", "2019-12-01"]) == 0
    text = report.read_text()
    assert "No spend column" in text and "alt='pacing_curve'" not in text  # says what is missing
    assert (report.with_name("ob_figures") / "hourly_conversion_rate.png").is_file()
