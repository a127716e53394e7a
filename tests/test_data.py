"""Loading, validation (one clear line per rule) and aggregation of performance windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gaelp_bayes import cli, data
from gaelp_bayes.errors import InputError

GOOD = """timestamp,campaign,clicks,conversions,spend,impressions,revenue
2026-01-05T00:00:00Z,a,10,1,5.0,100,20
2026-01-05T01:00:00Z,a,12,0,6.0,120,0
2026-01-05T00:00:00Z,b,8,2,4.0,80,40
"""


def write(tmp_path, text, name="w.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_loads_and_aggregates(tmp_path):
    windows = data.load_windows(write(tmp_path, GOOD))
    assert list(windows["campaign"]) == ["a", "a", "b"]
    assert windows["clicks"].dtype == np.int64 and str(windows["timestamp"].dt.tz) == "UTC"
    cells = data.aggregate(windows)
    assert cells.campaigns == ("a", "b")
    assert cells.clicks.sum() == 30 and cells.conversions.sum() == 3 and cells.spend.sum() == 15.0
    # 2026-01-05 is a Monday
    assert set(cells.dow) == {0} and sorted(cells.hour) == [0, 0, 1]


def test_timezone_moves_hours_and_days():
    frame = pd.DataFrame({"timestamp": ["2026-01-04T20:00:00Z"], "clicks": [5], "conversions": [1]})
    cells = data.aggregate(data.load_windows(frame, timezone="Asia/Tokyo"), timezone="Asia/Tokyo")
    assert (cells.dow[0], cells.hour[0]) == (0, 5)  # Sunday 20:00 UTC = Monday 05:00 in Tokyo


def test_offsets_are_honoured_and_naive_is_utc():
    frame = pd.DataFrame({"timestamp": ["2026-01-05T09:00:00+09:00", "2026-01-05T01:00:00"],
                          "clicks": [1, 1], "conversions": [0, 0]})
    w = data.load_windows(frame)
    assert list(w["timestamp"].dt.hour) == [0, 1]


def test_duplicate_after_offset_conversion_is_caught():
    frame = pd.DataFrame({"timestamp": ["2026-01-05T09:00:00+09:00", "2026-01-05T00:00:00Z"],
                          "clicks": [1, 1], "conversions": [0, 0]})
    with pytest.raises(InputError, match="rows 1, 2, columns 'campaign'\\+'timestamp': duplicate"):
        data.load_windows(frame)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("12,0,6.0", "12,0,-6.0"), "row 2, column 'spend': must be >= 0"),
    (lambda t: t.replace("8,2,4.0", "8,9,4.0"), "row 3, column 'conversions': must be <= clicks"),
    (lambda t: t.replace("10,1,5.0,100", "10,1,5.0,5"), "row 1, column 'impressions': must be >= clicks"),
    (lambda t: t.replace("12,0,6.0", "12,0,"), "row 2, column 'spend': missing or NaN"),
    (lambda t: t.replace("12,0,6.0", "12,0,NaN"), "row 2, column 'spend': missing or NaN"),
    (lambda t: t.replace("12,0,6.0", "12,0,six"), "row 2, column 'spend': not a number"),
    (lambda t: t.replace("a,12,0", "a,-12,0"), "row 2, column 'clicks': must be >= 0"),
    (lambda t: t.replace("a,12,0", "a,12.5,0"), "row 2, column 'clicks': must be a whole number"),
    (lambda t: t.replace("2026-01-05T01:00:00Z", "yesterday"), "row 2, column 'timestamp': not an ISO-8601"),
    (lambda t: t.replace("2026-01-05T01:00:00Z", "2026-01-05T01:30:00Z"), "row 2, column 'timestamp': not hour-aligned"),
    (lambda t: t.replace("2026-01-05T01:00:00Z", "2026-01-05T00:00:00Z"), "rows 1, 2, columns 'campaign'\\+'timestamp': duplicate"),
    (lambda t: t.replace("timestamp,campaign,clicks,", "time,campaign,clicks,"), "missing required column 'timestamp'"),
    (lambda t: t.splitlines()[0] + "\n", "empty file"),
    (lambda t: "", "empty file"),
])
def test_each_rule_gives_one_line_naming_file_row_and_column(tmp_path, edit, message):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(InputError, match=message) as err:
        data.load_windows(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path))


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("8,2,4.0", "8,9,4.0"))
    out = tmp_path / "models" / "bad"
    assert cli.main(["fit", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "row 3" in err[0] and "conversions" in err[0]
    assert not out.exists() and not (tmp_path / "models").exists()


def test_parquet_input(tmp_path):
    frame = pd.read_csv(write(tmp_path, GOOD))
    frame.to_parquet(tmp_path / "w.parquet")
    assert len(data.load_windows(tmp_path / "w.parquet")) == 3


def test_unknown_timezone_is_one_line():
    with pytest.raises(InputError, match="unknown timezone 'Mars/Olympus'"):
        data.check_timezone("Mars/Olympus")


def test_fingerprint_tracks_the_data(tmp_path):
    a = data.aggregate(data.load_windows(write(tmp_path, GOOD)))
    b = data.aggregate(data.load_windows(write(tmp_path, GOOD.replace("12,0,6.0", "12,1,6.0"), "b.csv")))
    assert a.fingerprint() != b.fingerprint()
