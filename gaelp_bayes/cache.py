"""The posterior cache ``models/<name>/``: write atomically, read only when intact.

Files:

- ``posterior.nc``: the full posterior DataTree (netCDF, h5netcdf engine) with
  ``posterior``, ``sample_stats`` and ``observed_data`` (the fitted cells).
- ``runtime.npz``: float32 cubes for the runtime (``Fit.runtime_arrays``: the model's export)
  plus ``campaigns`` (str array); loaded with ``allow_pickle=False``.
- ``manifest.json``: schema version, created-at, package version, data
  fingerprint, campaigns, timezone, settings, diagnostics, sha256 per file.

This module's *reader* of the runtime file (``read_runtime``) needs only numpy
and the standard library, so the runtime can use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .errors import CacheError, FitError, GaelpError
from .outputs import MODEL_MANIFEST, check_output

SCHEMA_VERSION = 1
POSTERIOR = "posterior.nc"
RUNTIME = "runtime.npz"
MANIFEST = MODEL_MANIFEST


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write(out: str | Path, fit, cells, max_runtime_draws: int = 1000, overwrite: bool = False) -> Path:
    """Write a fit to ``out`` atomically (temp dir beside it, then rename); returns the path.

    An existing ``out`` (a model cache, a file, a folder that is not empty) is replaced only with
    ``overwrite`` (``outputs.check_output``)."""
    out = check_output(out, folder=True, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fit.tree.to_netcdf(tmp / POSTERIOR, engine="h5netcdf")
        arrays = fit.runtime_arrays(max_runtime_draws)
        np.savez(tmp / RUNTIME, campaigns=np.array(cells.campaigns, dtype=str), **arrays)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "data_fingerprint": cells.fingerprint(),
            "campaigns": list(cells.campaigns),
            "timezone": cells.timezone,
            "period": list(cells.period),
            "n_windows": cells.n_windows,
            "has_spend": cells.has_spend,
            "has_revenue": cells.has_revenue,
            "runtime_draws": int(arrays["cvr"].shape[0]),
            "fit_seconds": round(fit.seconds, 2),
            "settings": fit.settings,
            "diagnostics": fit.diagnostics.as_dict(),
            "parts": fit.settings.get("part_diagnostics", {}),
            "files": {name: _sha256(tmp / name) for name in (POSTERIOR, RUNTIME)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=float))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing target is swapped out by rename, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | Path, verify: bool = True) -> dict:
    """The manifest of a cache, after checking its version and (``verify``) every file's sha256."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CacheError(f"{path}: not a model cache (no {MANIFEST}); fit one with 'gaelp-bayes fit'")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{mpath}: corrupt manifest ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise CacheError(f"{path}: cache schema version {version!r}, this gaelp_bayes reads {SCHEMA_VERSION}; refit")
    files = manifest.get("files", {})
    for name in (POSTERIOR, RUNTIME):
        fpath = path / name
        if name not in files:
            raise CacheError(f"{mpath}: no checksum for {name}; the cache is incomplete")
        if not fpath.is_file():
            raise CacheError(f"{path}: {name} is missing; the cache is incomplete")
        if verify and _sha256(fpath) != files[name]:
            raise CacheError(f"{fpath}: sha256 does not match the manifest (truncated or modified); refit")
    return manifest


PART_ARRAYS = {"conversion": "cvr", "volume": "volume", "cost": "cpc", "revenue": "rpc"}  # part -> runtime array


def part_verdicts(manifest: dict) -> dict[str, dict]:
    """Each fitted part's diagnostics (``passed``, ``failures``, ...).  Caches written before the manifest
    carried ``parts`` fall back to the fit settings' copy, then to the global verdict for every part."""
    for parts in (manifest.get("parts"), manifest.get("settings", {}).get("part_diagnostics")):
        if isinstance(parts, dict) and parts:
            return parts
    return {p: manifest.get("diagnostics", {}) for p in manifest.get("settings", {}).get("parts", ["conversion"])}


def failed_parts(manifest: dict) -> list[str]:
    return [p for p, d in part_verdicts(manifest).items() if not d.get("passed", False)]


def parts_phrase(parts: list[str]) -> str:
    """'the revenue part', 'the cost and revenue parts': how messages name model parts."""
    return f"the {' and '.join(parts)} part{'s' if len(parts) > 1 else ''}"


def consumers_left(failed: list[str]) -> str:
    """In words: what still accepts a fit whose ``failed`` parts missed the gate (without ``--force``)."""
    if "conversion" in failed:
        return "Nothing uses it unforced: every consumer needs the conversion part."
    if {"volume", "cost"} & set(failed):
        return "predict still uses it; allocation and the runtime pacer refuse it (they plan money over hours)."
    return ("predict, allocation of conversions and the runtime pacer still use it (without revenue figures); "
            "a revenue objective refuses it.")


def check_usable(manifest: dict, path: str | Path, force: bool = False, parts=None, strict: bool = False) -> None:
    """Refuse a cache whose fit failed the diagnostics gate in a part the caller uses (``parts``; every part
    when None or ``strict``), unless forced.  The error names the parts and what to do."""
    verdicts = part_verdicts(manifest)
    needed = list(verdicts) if parts is None or strict else [p for p in parts if p in verdicts]
    failed = [p for p in needed if not verdicts[p].get("passed", False)]
    if failed and not force:
        details = "; ".join(f"{p}: {', '.join(verdicts[p].get('failures', [])) or 'failed'}" for p in failed)
        raise FitError(f"{path}: {parts_phrase(failed)} of this fit failed "
                       f"its diagnostics gate ({details}); refit with more --tune/--draws, or pass --force to use "
                       "it anyway")


def usable_arrays(manifest: dict, arrays: dict, path: str | Path, parts, force: bool = False,
                  strict: bool = False) -> tuple[dict, list[str]]:
    """``check_usable`` for the parts a consumer needs; the arrays of any other failed part are left out
    (unless forced), with a warning saying what is missing and why."""
    check_usable(manifest, path, force, parts, strict)
    if force:
        return arrays, []
    dropped = [p for p in failed_parts(manifest) if p not in parts and PART_ARRAYS.get(p) in arrays]
    kept = {k: v for k, v in arrays.items() if k not in {PART_ARRAYS[p] for p in dropped}}
    return kept, [f"the {p} part of this fit failed its diagnostics gate: its numbers are left out" for p in dropped]


def holds_fit_of(path: str | Path, fingerprint: str, model_version: int, accept_failed: bool = False) -> bool:
    """Whether ``path`` holds an intact fit of the data with this fingerprint by this model version that
    passed its gate (or any such fit, with ``accept_failed``): a cache worth reusing instead of refitting."""
    try:
        manifest = read_manifest(path)
    except GaelpError:
        return False
    return (manifest["data_fingerprint"] == fingerprint and manifest["settings"].get("model_version") == model_version
            and (manifest["diagnostics"]["passed"] or accept_failed))


def read_runtime(path: str | Path, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Manifest and runtime arrays (float32) of a cache; numpy and the standard library only."""
    manifest = read_manifest(path, verify=verify)
    try:
        with np.load(Path(path) / RUNTIME, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise CacheError(f"{Path(path) / RUNTIME}: unreadable runtime file ({exc})") from None
    if "cvr" not in arrays or list(arrays.get("campaigns", [])) != manifest.get("campaigns"):
        raise CacheError(f"{Path(path) / RUNTIME}: runtime file does not match its manifest; refit")
    return manifest, arrays


def campaign_slot(manifest: dict, campaign: str | None,
                  error: type[GaelpError] = GaelpError) -> tuple[str, int, list[str]]:
    """Name, runtime-array index and warnings for a campaign choice (numpy and stdlib only).

    None is allowed only for a one-campaign model; an unseen campaign gets the population slot
    (the last index) and a warning.
    """
    names = manifest["campaigns"]
    if campaign is None:
        if len(names) > 1:
            raise error(f"the model has {len(names)} campaigns: choose one with --campaign / campaign= "
                        f"({', '.join(names)})")
        campaign = names[0]
    if campaign in names:
        return campaign, names.index(campaign), []
    return campaign, len(names), [f"campaign {campaign!r} not in the model: using the population level "
                                  "(wider intervals)"]


def read_posterior(path: str | Path, verify: bool = True):
    """Manifest and the full posterior DataTree (loaded into memory)."""
    import xarray as xr

    manifest = read_manifest(path, verify=verify)
    return manifest, xr.load_datatree(Path(path) / POSTERIOR, engine="h5netcdf")
