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


EVENTS = """click_time,campaign,is_attributed,attributed_time
2026-03-01T00:10:00Z,a,1,2026-03-01T00:12:00Z
2026-03-01T00:20:00Z,a,1,2026-03-01T09:00:00Z
2026-03-01T00:30:00Z,a,0,
2026-03-01T10:05:00Z,a,1,2026-03-01T13:00:00Z
2026-03-01T11:40:00Z,a,1,2026-03-01T11:41:00Z
2026-03-01T13:30:00Z,a,0,
"""


def test_an_event_log_read_as_of_a_time_gives_censored_windows_and_a_delay_sample(tmp_path):
    """Exported at 12:00: the 13:00 report and the 13:30 click are not in it yet; every window is observed
    until 12:00; the delays of the earlier half's clicks (before 06:00) are the sample."""
    delays: list[float] = []
    events = pd.read_csv(write(tmp_path, EVENTS, "events.csv"))
    windows = data.windows_from_events(events, "click_time", "is_attributed", group="campaign",
                                       conversion_time="attributed_time", as_of="2026-03-01T12:00:00Z",
                                       delays=delays)
    assert windows["clicks"].sum() == 5 and windows["conversions"].sum() == 3  # 10:05's reported at 13:00
    assert set(windows["observed_until"]) == {"2026-03-01T12:00:00Z"}
    assert sorted(delays) == [120.0, 8 * 3600 + 40 * 60]
    loaded = data.load_windows(windows)
    cells = data.aggregate(loaded, delays=np.array(delays))
    assert np.isclose(cells.exposure.sum(), cells.clicks.sum(), atol=2.5) and cells.exposure.sum() < cells.clicks.sum()
    recent = cells.hour == 11  # an hour before the export: only the fast half of conversions can be in
    assert 0.4 < cells.exposure[recent].sum() / cells.clicks[recent].sum() < 0.6
    with pytest.raises(InputError, match="observed_until.*delay"):
        data.aggregate(loaded)


@pytest.mark.parametrize("edit, message", [
    (("2026-03-01T00:12:00Z", "2026-03-01T00:05:00Z"), "row 1, column 'attributed_time': conversion time before the click"),
    (("a,1,2026-03-01T09:00:00Z", "a,1,"), "row 2, column 'attributed_time': a conversion (outcome 1) without"),
    (("2026-03-01T13:00:00Z", "13 o'clock"), "row 4, column 'attributed_time': not an ISO-8601 time"),
])
def test_bad_conversion_times_are_one_line(tmp_path, capsys, edit, message):
    raw = write(tmp_path, EVENTS.replace(*edit), "events.csv")
    out = tmp_path / "w.csv"
    code = cli.main(["windows", str(raw), "--time", "click_time", "--outcome", "is_attributed", "--group",
                     "campaign", "--conversion-time", "attributed_time", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not data.delay_file(out).exists()


def test_observed_until_before_its_window_is_an_error(tmp_path):
    text = "timestamp,clicks,conversions,observed_until\n2026-03-01T10:00:00Z,5,1,2026-03-01T09:00:00Z\n"
    with pytest.raises(InputError, match="row 1, column 'observed_until': before the window's start"):
        data.load_windows(write(tmp_path, text))


def _events(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["blank group", "file twice", "two files one name", "huge cost", "huge clicks"])
def test_windows_refuses_what_would_lose_or_double_events_with_one_line(tmp_path, capsys, case):
    """A row with a blank group vanished with its cost (2,999 of 3,000 rows kept, no word); one file given
    twice, or two files of one name in two folders, merged into one campaign with doubled counts; spends past
    float range summed to inf, counts past int64 to negative clicks."""
    events = "t,y,g,cost\n2026-01-05T00:10:00Z,1,a,1.5\n2026-01-05T01:10:00Z,0,{g},{cost}\n"
    out = tmp_path / "w.csv"
    if case == "blank group":
        argv, words = [str(_events(tmp_path, "e.csv", events.format(g="", cost=2.0))), "--group", "g"], ("row 2", "'g'")
    elif case == "file twice":
        raw = _events(tmp_path, "e.csv", events.format(g="a", cost=2.0))
        argv, words = [str(raw), str(tmp_path / "." / "e.csv")], ("given twice",)
    elif case == "two files one name":
        argv = [str(_events(tmp_path, f"{d}/e.csv", events.format(g="a", cost=2.0))) for d in ("x", "y")]
        words = ("two files are named 'e'", "--group")
    elif case == "huge cost":
        argv, words = [str(_events(tmp_path, "e.csv", events.format(g="a", cost=1e308))), "--cost", "cost"], ("'cost'",)
    else:
        text = "timestamp,campaign,clicks,conversions\n2026-01-05T00:00:00Z,a,9223372036854775000,0\n"
        raw = _events(tmp_path, "windows.csv", text)
        assert cli.main(["fit", str(raw), "--out", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err
        assert "row 1, column 'clicks': must be at most" in err and len(err.strip().splitlines()) == 1
        return
    assert cli.main(["windows", *argv, "--time", "t", "--outcome", "y", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and all(w in err for w in words), err
    assert not out.exists()


def test_times_with_nanoseconds_are_read(tmp_path):
    """Event times and observed_until with more than 6 decimals crashed with a TypeError."""
    raw = _events(tmp_path, "e.csv", "t,y,r\n2026-01-05T00:10:38.123456789Z,1,2026-01-05T00:20:00.987654321Z\n"
                                     "2026-01-05T02:10:00Z,0,\n")
    out = tmp_path / "w.csv"
    assert cli.main(["windows", str(raw), "--time", "t", "--outcome", "y", "--conversion-time", "r", "--as-of",
                     "2026-01-05T03:00:00.000000001Z", "--out", str(out)]) == 0
    windows = data.load_windows(out)
    assert windows["clicks"].sum() == 2 and windows["conversions"].sum() == 1
    frame = pd.DataFrame({"timestamp": ["2026-01-05T00:00:00Z"], "clicks": [3], "conversions": [1],
                          "observed_until": ["2026-01-05T05:00:00.123456789Z"]})
    assert len(data.load_windows(frame)) == 1
