"""The journal's lines: file names, the running checksum, and reading a record back."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import zlib

from .checks import check_cost
from .controllers import L_MAX, L_MIN

MAX_FILE_NAME = 120  # bytes of a journal file name; longer campaign names are cut and tagged with a hash


def journal_file_name(campaign: str, date: dt.date) -> str:
    """The journal file of a campaign's day: the name with every character but ASCII letters, digits,
    '_' and '-' percent-encoded (so no name can leave the journal folder), cut to ``MAX_FILE_NAME`` bytes
    with a hash of the whole name when long, then the date."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in campaign)
    suffix = f"-{date.isoformat()}.jsonl"
    room = MAX_FILE_NAME - len(suffix)
    if len(safe) > room:
        safe = f"{safe[:room - 17]}~{hashlib.sha256(campaign.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    return safe + suffix


CHAIN_FIELD = b', "c": "'  # a record line ends with its running checksum: ``..., "c": "1a2b3c4d"}``


def chain_next(previous: str, line: bytes) -> str:
    """The running checksum after ``line`` (without its own checksum field): CRC-32 of the previous one and
    the line.  A line edited or missing in the middle of a journal breaks it at the next line."""
    return f"{zlib.crc32(line, zlib.crc32(previous.encode())):08x}"


def chained(line: str, previous: str) -> tuple[str, str]:
    """A record line (a JSON object) with its running checksum appended, and that checksum."""
    checksum = chain_next(previous, line.encode())
    return f'{line[:-1]}, "c": "{checksum}"}}', checksum


def unchained(line: bytes) -> tuple[bytes, str | None]:
    """A journal line without its checksum field, and the checksum (None: the line carries none)."""
    at = line.rfind(CHAIN_FIELD)
    if at < 0 or not line.endswith(b'"}') or len(line) - at - len(CHAIN_FIELD) != 10:
        return line, None
    return line[:at] + b"}", line[at + len(CHAIN_FIELD):-2].decode("ascii", "replace")


def _journal_record(line: bytes) -> tuple[tuple[float, float, int, int, float | None] | None, str,
                                          tuple[float, float] | None, list | None]:
    """(t, cost, clicks, conversions, click time of a postback or None) of one journal line, or None and why
    it is not a record; the
    controller's state (L, its time) the line carries, if a valid one (lines written before records
    carried it, or edited, carry none: the controller then goes on from the replayed records); and the
    market belief's state (``MarketBelief.state``) if the line carries one (the records after which the pacer
    learns).  A day's first line may be the market alone (learned on earlier days): why is then "the day's
    market"."""
    try:
        e = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8", None, None
    except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's limit
        return None, "not JSON", None, None
    if not isinstance(e, dict):
        return None, f"a JSON {type(e).__name__}, not an object", None, None
    if list(e) == ["market"]:
        return None, "the day's market", None, e["market"]
    missing = [k for k in ("t", "cost", "clicks", "conversions") if k not in e]
    if missing:
        return None, f"no {', '.join(missing)}", None, None
    t, clicks, conversions = e["t"], e["clicks"], e["conversions"]
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)):
        return None, f"t must be a finite number, got {t!r}", None, None
    try:
        cost = check_cost(e["cost"])
    except ValueError as exc:
        return None, str(exc), None, None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (clicks, conversions)):
        return None, f"clicks {clicks!r} and conversions {conversions!r} must be whole numbers >= 0", None, None
    L, ti = e.get("L"), e.get("ti")
    valid = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (L, ti))
    state = (min(max(float(L), L_MIN), L_MAX), float(ti)) if valid else None
    click_t = e.get("click_t")
    if click_t is not None and not (isinstance(click_t, (int, float)) and not isinstance(click_t, bool)
                                    and math.isfinite(click_t)):
        return None, f"click_t must be a finite number, got {click_t!r}", None, None
    market = e.get("market") if isinstance(e.get("market"), list) else None
    return (float(t), cost, clicks, conversions, None if click_t is None else float(click_t)), "", state, market
