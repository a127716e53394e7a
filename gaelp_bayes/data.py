"""Load, validate and aggregate performance windows.

A *window* is one campaign-hour of logged performance (README, "Performance windows in").
Validation fails on the first broken rule with one line naming the file, the
row(s), the column and the rule.  Row numbers are 1-based data rows (the CSV
header is not counted), so row 1 is line 2 of a CSV file.

Windows are aggregated to *cells* (campaign x day-of-week x hour, in the
account's timezone): the model's likelihood uses only these sufficient
statistics, so its cost does not grow with the number of rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from .errors import InputError

REQUIRED = ("timestamp", "clicks", "conversions")
COUNT_COLUMNS = ("clicks", "conversions", "impressions")
MONEY_COLUMNS = ("spend", "revenue")
DEFAULT_CAMPAIGN = "default"
N_DOW, N_HOUR = 7, 24
TIME_RANGE = (pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC"))  # times outside: errors
MAX_FILLED_GAP = pd.Timedelta(days=7)  # longer silences in an event log are left out, not filled with zero windows
WEEK = pd.Timedelta(days=7)  # the drift's time step (``Cells.weekly_trials``)
MAX_VALUE = 1e12  # a count or an amount of one row: larger ones would sum past int64 or float range


@dataclass(frozen=True)
class Cells:
    """Sufficient statistics per observed (campaign, day-of-week, hour) cell.

    Arrays are aligned; ``campaign`` holds indices into ``campaigns``.
    ``spend``/``revenue`` are None when the input had no such column.
    """

    campaigns: tuple[str, ...]
    timezone: str
    campaign: np.ndarray  # int
    dow: np.ndarray  # int, 0 = Monday
    hour: np.ndarray  # int, 0-23 local
    windows: np.ndarray  # int, number of windows summed into the cell
    clicks: np.ndarray  # int
    conversions: np.ndarray  # int
    spend: np.ndarray | None
    revenue: np.ndarray | None
    period: tuple[str, str]  # first and last window start, ISO-8601 UTC
    n_windows: int
    # clicks weighted by the share of their conversions reported by the window's ``observed_until`` (float;
    # None: every conversion reported): the trials the conversion rate is learned from
    exposure: np.ndarray | None = None
    # the trials (``trials``) and conversions of each cell split by the week they fell in, counted back
    # from the data's end: [cell, week], column 0 the last 7 days (float; None: the data spans at most one
    # week).  What the conversion part's drift is learned from
    weekly_trials: np.ndarray | None = None
    weekly_conversions: np.ndarray | None = None

    @property
    def trials(self) -> np.ndarray:
        """What the reported conversions are out of: ``exposure`` where the data is censored (never below the
        conversions: a censored cell's exposure can round below them), else clicks."""
        return self.clicks if self.exposure is None else np.maximum(self.exposure, self.conversions)

    @property
    def has_spend(self) -> bool:
        return self.spend is not None

    @property
    def has_revenue(self) -> bool:
        return self.revenue is not None

    def fingerprint(self) -> str:
        """sha256 over the statistics the fit saw (not the raw file bytes)."""
        h = hashlib.sha256()
        h.update("|".join(self.campaigns).encode())
        h.update(self.timezone.encode())
        for arr in (self.campaign, self.dow, self.hour, self.windows, self.clicks,
                    self.conversions, self.spend, self.revenue, self.exposure, self.weekly_trials,
                    self.weekly_conversions):
            if arr is not None:
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()


def check_timezone(timezone: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name, or raise a one-line InputError."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown timezone {timezone!r} (use an IANA name such as 'UTC' or 'Asia/Tokyo')") from None


def _rows(mask: np.ndarray | pd.Series) -> str:
    """'row 4' or 'rows 4, 9, 12 (+3 more)' for the True positions of a mask (1-based)."""
    idx = np.flatnonzero(np.asarray(mask)) + 1
    shown = ", ".join(str(i) for i in idx[:5])
    more = f" (+{len(idx) - 5} more)" if len(idx) > 5 else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as a DataFrame of strings/numbers, or raise InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file (no header, no rows)") from None
    except Exception as exc:  # parser errors name the line; keep them to one line
        raise InputError(f"{path}: cannot read as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}: "
                         f"{str(exc).splitlines()[0]}") from None
    return frame


def load_windows(source: str | Path | pd.DataFrame, timezone: str = "UTC",
                 required: tuple[str, ...] = REQUIRED) -> pd.DataFrame:
    """Load and validate windows from a CSV/Parquet path or a DataFrame.

    Returns a clean DataFrame: ``timestamp`` (UTC), ``campaign`` (str), the
    count columns as int64 and the money columns as float64 (only those present).
    ``timezone`` is the account timezone in which windows must be hour-aligned.
    """
    name = str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>"
    frame = read_table(source) if not isinstance(source, pd.DataFrame) else source.reset_index(drop=True)
    return validate_windows(frame, name, timezone, required)


def validate_windows(frame: pd.DataFrame, name: str, timezone: str = "UTC",
                     required: tuple[str, ...] = REQUIRED) -> pd.DataFrame:
    """Validate one table of windows (see module doc); raise InputError on the first rule broken."""
    tz = check_timezone(timezone)
    frame = frame.rename(columns=lambda c: str(c).strip())
    if len(frame) == 0:
        raise InputError(f"{name}: empty file: no windows (header only)")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{name}: missing required column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)} (have: {', '.join(map(str, frame.columns))})")
    out = pd.DataFrame(index=frame.index)

    # Numbers first: every later rule needs them.
    for col in COUNT_COLUMNS + MONEY_COLUMNS:
        if col not in frame.columns:
            continue
        raw = frame[col]
        blank = raw.isna() | (raw.astype(str).str.strip().str.lower().isin(["", "nan", "none", "null"]))
        if blank.any():
            raise InputError(f"{name}: {_rows(blank)}, column {col!r}: missing or NaN value")
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna()
        if bad.any():
            first = raw[bad].iloc[0]
            raise InputError(f"{name}: {_rows(bad)}, column {col!r}: not a number (e.g. {first!r})")
        values = values.astype("float64")
        if not np.isfinite(values).all():
            raise InputError(f"{name}: {_rows(~np.isfinite(values))}, column {col!r}: not a finite number")
        if (values < 0).any():
            raise InputError(f"{name}: {_rows(values < 0)}, column {col!r}: must be >= 0")
        if (values > MAX_VALUE).any():
            raise InputError(f"{name}: {_rows(values > MAX_VALUE)}, column {col!r}: must be at most {MAX_VALUE:.0e} "
                             "(sums of such values would overflow)")
        if col in COUNT_COLUMNS:
            frac = values != np.floor(values)
            if frac.any():
                raise InputError(f"{name}: {_rows(frac)}, column {col!r}: must be a whole number")
            values = values.astype("int64")
        out[col] = values

    if "conversions" in out:
        over = out["conversions"] > out["clicks"]
        if over.any():
            raise InputError(f"{name}: {_rows(over)}, column 'conversions': must be <= clicks")
    if "impressions" in out:
        under = out["impressions"] < out["clicks"]
        if under.any():
            raise InputError(f"{name}: {_rows(under)}, column 'impressions': must be >= clicks")

    out.insert(0, "timestamp", _parse_timestamps(frame["timestamp"], name, tz))
    if "observed_until" in frame.columns:  # conversions reported by then (an export while they still arrive)
        until = _event_times(frame["observed_until"], ZoneInfo("UTC"), name, "observed_until")
        early = until < out["timestamp"]
        if early.any():
            raise InputError(f"{name}: {_rows(early)}, column 'observed_until': before the window's start "
                             f"(e.g. {frame['observed_until'][early].iloc[0]!s})")
        out["observed_until"] = until.astype("datetime64[ns, UTC]")
    if "campaign" in frame.columns:
        camp = frame["campaign"]
        blank = camp.isna() | (camp.astype(str).str.strip() == "")
        if blank.any():
            raise InputError(f"{name}: {_rows(blank)}, column 'campaign': empty campaign name")
        out.insert(1, "campaign", camp.astype(str).str.strip())
    else:
        out.insert(1, "campaign", DEFAULT_CAMPAIGN)

    dup = out.duplicated(["campaign", "timestamp"], keep=False)
    if dup.any():
        raise InputError(f"{name}: {_rows(dup)}, columns 'campaign'+'timestamp': duplicate campaign-hour")
    return out.reset_index(drop=True)


def _parse_timestamps(raw: pd.Series, name: str, tz: ZoneInfo) -> pd.Series:
    """ISO-8601 strings or datetimes -> UTC; naive means UTC; must be hour-aligned in ``tz``."""
    blank = raw.isna() | (raw.astype(str).str.strip() == "")
    if blank.any():
        raise InputError(f"{name}: {_rows(blank)}, column 'timestamp': missing value")
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
    else:
        text = raw.astype(str).str.strip()
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna()
        if bad.any():
            raise InputError(f"{name}: {_rows(bad)}, column 'timestamp': not an ISO-8601 time "
                             f"(e.g. {text[bad].iloc[0]!r})")
    _check_time_range(parsed, raw, name, "timestamp")
    local = parsed.dt.tz_convert(tz)
    off = (local.dt.minute != 0) | (local.dt.second != 0) | (local.dt.microsecond != 0) | (local.dt.nanosecond != 0)
    if off.any():
        raise InputError(f"{name}: {_rows(off)}, column 'timestamp': not hour-aligned in timezone {tz.key} "
                         f"(e.g. {raw[off].iloc[0]!s}); a window starts on the hour")
    return parsed.astype("datetime64[ns, UTC]")


def _event_times(raw: pd.Series, tz: ZoneInfo, name: str, column: str, blank_ok: bool = False) -> pd.Series:
    """ISO-8601 times (with an offset, or else in ``tz``) or datetimes -> UTC; an unparsable one is an
    InputError naming the rows, a blank one too unless ``blank_ok`` (then NaT)."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = raw.dt.tz_localize(tz) if raw.dt.tz is None else raw
        stamps = stamps.dt.tz_convert("UTC")
        blank = stamps.isna() if blank_ok else pd.Series(False, index=raw.index)
    else:
        text = raw.astype(str).str.strip()
        blank = (raw.isna() | text.str.lower().isin(["", "nan", "nat", "none", "null"])) if blank_ok else \
            pd.Series(False, index=raw.index)
        aware = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
        parsed = []
        if aware.any():
            parsed.append(pd.to_datetime(text[aware], format="ISO8601", errors="coerce", utc=True))
        if (~aware).any():
            naive = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
            parsed.append(naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"))
        # nanoseconds (times written with up to 9 decimals of a second), once the years are known to fit them
        stamps = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        for part in parsed:
            _check_time_range(part.reindex(raw.index), raw, name, column)
            stamps[part.index] = part.astype("datetime64[ns, UTC]")
    bad = stamps.isna() & ~blank
    if bad.any():
        raise InputError(f"{name}: {_rows(bad)}, column {column!r}: not an ISO-8601 time (e.g. {raw[bad].iloc[0]!r})")
    _check_time_range(stamps, raw, name, column)
    return stamps


def _check_time_range(stamps: pd.Series, raw: pd.Series, name: str, column: str) -> None:
    """InputError for times outside ``TIME_RANGE`` (a year 2300, an epoch-zero default), naming the rows."""
    out = stamps.notna() & ((stamps < TIME_RANGE[0]) | (stamps >= TIME_RANGE[1]))
    if out.any():
        raise InputError(f"{name}: {_rows(out)}, column {column!r}: time out of range (years 1970 to 2199; "
                         f"e.g. {raw[out].iloc[0]!s})")


def local_dow_hour(timestamps: pd.Series, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """Day of week (0 = Monday) and hour of day of UTC timestamps in ``timezone``."""
    local = pd.DatetimeIndex(timestamps).tz_convert(check_timezone(timezone))
    return np.asarray(local.dayofweek, dtype=np.int64), np.asarray(local.hour, dtype=np.int64)


DELAYS_SUFFIX = ".delays.csv"  # the delay sample beside a windows file: windows.csv -> windows.delays.csv


def delay_file(windows_path: str | Path) -> Path:
    """Where ``gaelp-bayes windows --conversion-time`` writes the delay sample for ``windows_path``."""
    path = Path(windows_path)
    return path.with_name(path.name.rsplit(".", 1)[0] + DELAYS_SUFFIX)


def read_delays(path: str | Path) -> np.ndarray:
    """A delay sample file (one column ``delay_seconds``, numbers >= 0), validated."""
    frame = read_table(path)
    if "delay_seconds" not in frame.columns:
        raise InputError(f"{path}: missing required column 'delay_seconds' (have: {', '.join(map(str, frame.columns))})")
    values = pd.to_numeric(frame["delay_seconds"], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0)) | (values < 0)
    if bad.any():
        raise InputError(f"{path}: {_rows(bad)}, column 'delay_seconds': must be a number of seconds >= 0")
    if len(values) == 0:
        raise InputError(f"{path}: empty file: no delays")
    return np.sort(values.to_numpy(np.float64))


def reported_share(elapsed_hours_start: np.ndarray, delays: np.ndarray) -> np.ndarray:
    """Share of a window's conversions reported by its ``observed_until``, given the hours from the window's
    start to then and a sample of conversion delays (seconds): the delay distribution averaged over the
    window's hour (clicks spread evenly over it)."""
    sample = np.sort(np.asarray(delays, dtype=np.float64))
    offsets = (np.arange(12) + 0.5) / 12  # twelve points through the hour
    elapsed = 3600.0 * (elapsed_hours_start[:, None] - offsets[None, :])
    return (np.searchsorted(sample, elapsed, side="right") / sample.size).mean(axis=1)


def aggregate(windows: pd.DataFrame, timezone: str = "UTC", delays: np.ndarray | None = None,
              name: str = "windows") -> Cells:
    """Sum validated windows into campaign x day-of-week x hour cells (local time).  Windows with an
    ``observed_until`` need ``delays`` (a sample of conversion delays in seconds): each window's clicks
    count as trials in proportion to the share of their conversions reported by then (``exposure``)."""
    censored = "observed_until" in windows and windows["observed_until"].notna().any()
    if censored and delays is None:
        raise InputError(f"{name}: column 'observed_until': censored windows need the conversion delay "
                         f"distribution (a delay sample file: see `gaelp-bayes windows --conversion-time`)")
    dow, hour = local_dow_hour(windows["timestamp"], timezone)
    campaigns = tuple(sorted(windows["campaign"].unique()))
    code = {c: i for i, c in enumerate(campaigns)}
    frame = pd.DataFrame({
        "campaign": windows["campaign"].map(code).to_numpy(np.int64),
        "dow": dow, "hour": hour, "windows": 1,
        "clicks": windows["clicks"].to_numpy(), "conversions": windows["conversions"].to_numpy(),
    })
    money = [c for c in MONEY_COLUMNS if c in windows]
    for col in money:
        frame[col] = windows[col].to_numpy()
    if censored:
        elapsed = (windows["observed_until"] - windows["timestamp"]).dt.total_seconds().to_numpy() / 3600
        share = np.where(windows["observed_until"].isna(), 1.0, reported_share(np.nan_to_num(elapsed), delays))
        frame["exposure"] = windows["clicks"].to_numpy() * share
    cells = frame.groupby(["campaign", "dow", "hour"], sort=True).sum().reset_index()
    weeks_back = ((windows["timestamp"].max() - windows["timestamp"]) // WEEK).to_numpy(np.int64)
    by_week = frame.assign(week=weeks_back) if weeks_back.max() > 0 else None
    return Cells(
        campaigns=campaigns, timezone=timezone,
        campaign=cells["campaign"].to_numpy(np.int64), dow=cells["dow"].to_numpy(np.int64),
        hour=cells["hour"].to_numpy(np.int64), windows=cells["windows"].to_numpy(np.int64),
        clicks=cells["clicks"].to_numpy(np.int64), conversions=cells["conversions"].to_numpy(np.int64),
        spend=cells["spend"].to_numpy(np.float64) if "spend" in money else None,
        revenue=cells["revenue"].to_numpy(np.float64) if "revenue" in money else None,
        period=(windows["timestamp"].min().isoformat(), windows["timestamp"].max().isoformat()),
        n_windows=len(windows),
        exposure=cells["exposure"].to_numpy(np.float64) if censored else None,
        weekly_trials=None if by_week is None else _weekly(by_week, "exposure" if censored else "clicks"),
        weekly_conversions=None if by_week is None else _weekly(by_week, "conversions"),
    )


def _weekly(frame: pd.DataFrame, column: str) -> np.ndarray:
    """[cell, week]: ``column`` of each (campaign, dow, hour) cell per week counted back from the end, the
    cells in ``aggregate``'s order."""
    weekly = frame.groupby(["campaign", "dow", "hour", "week"], sort=True)[column].sum().unstack("week", fill_value=0)
    return weekly.reindex(columns=range(int(frame["week"].max()) + 1), fill_value=0).to_numpy(np.float64)


def windows_from_events(events: pd.DataFrame, time: str, outcome: str, group: str | None = None,
                        cost: str | None = None, revenue: str | None = None, source_tz: str = "UTC",
                        name: str = "<DataFrame>", gaps: list[str] | None = None,
                        conversion_time: str | None = None, as_of: str | None = None,
                        delays: list[float] | None = None) -> pd.DataFrame:
    """Aggregate a raw event log (one row per trial, outcome 0/1) into hourly performance windows.

    clicks = rows, conversions = sum of the outcome, spend = sum of ``cost``, revenue = sum of
    ``revenue``; ``group`` becomes the campaign.  Times without an offset are in ``source_tz``.
    Hours with no events between a campaign's first and last event are kept as zero windows, except
    across a silence longer than ``MAX_FILLED_GAP`` (a pause, or a stray timestamp such as one event in
    1970): that is left out, and described in ``gaps`` (a list the caller passes, to warn with).

    With ``conversion_time`` (the column of when each conversion was reported; blank where the outcome is
    0), the log is read as exported at ``as_of`` (default: its latest time): clicks after it are not in
    it, a conversion counts only if reported by then, every window gets ``observed_until`` = ``as_of``,
    and the delays (seconds from click to report) of the conversions reported by then whose clicks came in
    the earlier half of the log (a delay sample not cut short by the export) go into ``delays``.
    Returns the window schema (``timestamp`` as ISO-8601 UTC strings).
    """
    tz = check_timezone(source_tz)
    for role, col in (("time", time), ("outcome", outcome), ("group", group), ("cost", cost), ("revenue", revenue),
                      ("conversion-time", conversion_time)):
        if col is not None and col not in events.columns:
            raise InputError(f"{name}: no column {col!r} for --{role} (have: {', '.join(map(str, events.columns))})")
    if len(events) == 0:
        raise InputError(f"{name}: empty file: no events")
    stamps = _event_times(events[time], tz, name, time)
    hours = stamps.dt.floor("h")
    if group:  # a row without a group would vanish from every campaign, with its cost
        blank = events[group].isna() | (events[group].astype(str).str.strip() == "")
        if blank.any():
            raise InputError(f"{name}: {_rows(blank)}, column {group!r}: empty group value (every event needs the "
                             "campaign it belongs to)")

    out = pd.DataFrame({"timestamp": hours.to_numpy(),
                        "campaign": events[group].astype(str).str.strip() if group else DEFAULT_CAMPAIGN})
    y = pd.to_numeric(events[outcome], errors="coerce")
    bad = ~y.isin([0, 1])
    if bad.any():
        raise InputError(f"{name}: {_rows(bad)}, column {outcome!r}: outcome must be 0 or 1 "
                         f"(e.g. {events[outcome][bad].iloc[0]!r})")
    out["clicks"] = 1
    out["conversions"] = y.astype("int64").to_numpy()
    until = None
    if conversion_time is not None:
        reported = _event_times(events[conversion_time], tz, name, conversion_time, blank_ok=True)
        missing = (y == 1) & reported.isna()
        if missing.any():
            raise InputError(f"{name}: {_rows(missing)}, column {conversion_time!r}: a conversion (outcome 1) "
                             "without a conversion time")
        before = reported.notna() & (reported < stamps)
        if before.any():
            raise InputError(f"{name}: {_rows(before)}, column {conversion_time!r}: conversion time before the "
                             f"click (e.g. {events[conversion_time][before].iloc[0]!s})")
        if as_of is None:  # the latest time in the log
            until = max(stamps.max(), reported.max()) if reported.notna().any() else stamps.max()
        else:
            until = pd.to_datetime(str(as_of), format="ISO8601", errors="coerce", utc=True)
            if pd.isna(until) or until < stamps.min():
                raise InputError(f"{name}: --as-of {as_of!r}: not an ISO-8601 time at or after the first event "
                                 f"({stamps.min():%Y-%m-%dT%H:%M:%SZ})")
        counted = (y == 1) & (reported <= until)
        out["conversions"] = counted.astype("int64").to_numpy()
        if delays is not None:
            early = counted & (stamps <= stamps.min() + (until - stamps.min()) / 2)
            delays.extend((reported[early] - stamps[early]).dt.total_seconds().tolist())
        kept = (stamps <= until).to_numpy()
        out, stamps, events = out[kept], stamps[kept], events[kept]
    for col, target in ((cost, "spend"), (revenue, "revenue")):
        if col is None:
            continue
        v = pd.to_numeric(events[col], errors="coerce")
        bad = v.isna() | (v < 0) | ~np.isfinite(v.fillna(0)) | (v > MAX_VALUE)
        if bad.any():
            raise InputError(f"{name}: {_rows(bad)}, column {col!r}: must be a number >= 0 and at most "
                             f"{MAX_VALUE:.0e}")
        out[target] = v.to_numpy(np.float64)
    keys = ["campaign", "timestamp"]
    first_row = out.assign(row=np.arange(1, len(out) + 1)).groupby(keys, sort=True)["row"].min()
    summed = out.groupby(keys, sort=True).sum()
    frames = []
    for camp, part in summed.groupby(level="campaign", sort=True):
        part = part.droplevel("campaign")
        hours = part.index
        breaks = np.flatnonzero(np.diff(hours.to_numpy()) > MAX_FILLED_GAP.to_timedelta64())
        for b in breaks:
            before, after = hours[b], hours[b + 1]
            if gaps is not None:
                gaps.append(f"{name}: campaign {camp!r}: no events from {before:%Y-%m-%d %H:00} (row "
                            f"{first_row[(camp, before)]}) to {after:%Y-%m-%d %H:00} (row {first_row[(camp, after)]}), "
                            f"{(after - before).days} days: left out, not filled with empty windows (column {time!r})")
        for segment in np.split(np.arange(len(hours)), breaks + 1):
            span = pd.date_range(hours[segment[0]], hours[segment[-1]], freq="h", name="timestamp")
            filled = part.iloc[segment].reindex(span, fill_value=0).reset_index()
            filled.insert(1, "campaign", camp)
            frames.append(filled)
    windows = pd.concat(frames, ignore_index=True)
    windows["timestamp"] = windows["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if until is not None:
        windows["observed_until"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    for col in ("clicks", "conversions"):
        windows[col] = windows[col].astype("int64")
    return windows
