"""The posterior cache ``models/<name>/``: write atomically, read only when intact.

Files:

- ``posterior.nc``: the full posterior DataTree (netCDF, h5netcdf engine) with
  ``posterior``, ``sample_stats`` and ``observed_data`` (the fitted cells).
- ``runtime/``: the runtime's float32 draws (the model's export), one ``.npy`` per array, campaign-major
  (``[slot, draw, ...]``: slot ``i`` is campaign ``i`` of the manifest, the last slot a new campaign), so
  that one campaign's draws are one contiguous block, read through a memory map without touching the
  others; ``digests.npy`` holds each slot's sha256 (over its block in every array, in the manifest's
  order).  Loaded with ``allow_pickle=False``.
- ``manifest.json``: schema version, created-at, package version, data fingerprint, campaigns, timezone,
  settings, diagnostics, the runtime arrays' shapes, the sha256 of ``posterior.nc`` and of
  ``runtime/digests.npy``, and its own sha256 (``manifest_sha256``, over the rest of it): campaign names
  swapped by hand would hand one campaign another's draws.

Integrity is checked where data is read: the posterior's checksum by ``read_posterior``, each campaign's
draws against its digest by ``read_runtime`` (only the campaigns asked for: a pacer on a cache of 10,000
campaigns reads and checks its own ~2 MB, not gigabytes).

This module's *reader* of the runtime files (``read_runtime``) needs only numpy and the standard library,
so the runtime can use it.
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

SCHEMA_VERSION = 3  # 3: the manifest carries its own checksum; 2: runtime arrays per campaign; 1: one runtime.npz
POSTERIOR = "posterior.nc"
RUNTIME = "runtime"  # folder
DIGESTS = f"{RUNTIME}/digests.npy"
MANIFEST = MODEL_MANIFEST


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


WEEK_SECONDS = 7 * 86400.0  # the drift's time step
DELAY_QUANTILES = 201  # the conversion delay travels in the manifest as this many quantiles (0%, 0.5%, .. 100%)


def write(out: str | Path, fit, cells, max_runtime_draws: int = 1000, overwrite: bool = False,
          conversion_delay=None) -> Path:
    """Write a fit to ``out`` atomically (temp dir beside it, then rename); returns the path.  With
    ``conversion_delay`` (a sample of delays, seconds), its quantiles go into the manifest (the runtime's
    ``conversion_delay`` by default).

    An existing ``out`` (a model cache, a file, a folder that is not empty) is replaced only with
    ``overwrite`` (``outputs.check_output``)."""
    out = check_output(out, folder=True, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_tree(fit.tree, tmp / POSTERIOR)
        shapes = write_runtime(tmp, fit.runtime_blocks(max_runtime_draws), len(cells.campaigns) + 1)
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
            "runtime_draws": shapes["cvr"][1],
            "runtime_arrays": shapes,
            "fit_seconds": round(fit.seconds, 2),
            "settings": fit.settings,
            "diagnostics": fit.diagnostics.as_dict(),
            "parts": fit.settings.get("part_diagnostics", {}),
            "files": {name: _sha256(tmp / name) for name in (POSTERIOR, DIGESTS)},
        }
        if "drift" in shapes:  # the middle of the data's last week: where the drift's forecasts start
            end = dt.datetime.fromisoformat(cells.period[1]) + dt.timedelta(hours=1)
            manifest["drift_anchor"] = (end - dt.timedelta(days=3.5)).isoformat()
        if conversion_delay is not None:
            quantiles = np.quantile(np.asarray(conversion_delay, np.float64), np.linspace(0, 1, DELAY_QUANTILES))
            manifest["conversion_delay"] = [round(float(q), 3) for q in quantiles]
        write_manifest(tmp, manifest)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_tree(tree, path: Path) -> None:
    """Write a DataTree to one netCDF file group by group, each loaded only while it is written (a sharded
    fit's tree is read lazily from its shards' files: it is never all in memory)."""
    mode = "w"
    for node in tree.subtree:
        dataset = node.to_dataset(inherit=False)
        if node.is_root or dataset.variables or dataset.attrs:
            dataset.to_netcdf(path, mode=mode, group=None if node.is_root else node.path, engine="h5netcdf")
            mode = "a"


def write_runtime(folder: Path, blocks, slots: int) -> dict[str, list[int]]:
    """Write the runtime arrays into ``folder/runtime/`` from ``blocks``: (slot indices, {name: [draw, k,
    ...]}) pairs that together fill every one of ``slots`` slots (one fit's export at a time: a sharded
    fit never holds every campaign's draws in memory).  Returns each array's shape ([slot, draw, ...])."""
    folder = Path(folder) / RUNTIME
    folder.mkdir()
    files: dict[str, np.ndarray] = {}
    digests = np.zeros((slots, 32), np.uint8)
    filled = np.zeros(slots, bool)
    for where, arrays in blocks:
        if not files:
            files = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32,
                                                     shape=(slots, a.shape[0]) + a.shape[2:])
                     for name, a in arrays.items()}
        if list(arrays) != list(files) or any(a.shape[:1] + a.shape[2:] != files[n].shape[1:]
                                              for n, a in arrays.items()):
            raise FitError("the fits exported runtime draws of different shapes; refit with the same options")
        for j, slot in enumerate(where):
            digest = hashlib.sha256()
            for name, a in arrays.items():
                block = np.ascontiguousarray(a[:, j], dtype=np.float32)
                files[name][slot] = block
                digest.update(block.data)
            digests[slot] = np.frombuffer(digest.digest(), np.uint8)
            filled[slot] = True
    if not filled.all():
        raise FitError(f"runtime draws missing for slots {np.flatnonzero(~filled).tolist()[:10]}")
    for memmap in files.values():
        memmap.flush()
    np.save(folder.parent / DIGESTS, digests)
    return {name: list(m.shape) for name, m in files.items()}


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing target is swapped out by rename, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


MANIFEST_CHECKSUM = "manifest_sha256"


def _manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: str | Path, manifest: dict) -> None:
    """Write ``manifest.json`` into ``folder`` (atomically) with its own checksum over the rest of it."""
    from .outputs import atomic_file

    plain = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}, default=float))
    with atomic_file(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps({**plain, MANIFEST_CHECKSUM: _manifest_checksum(plain)}, indent=2))


def read_manifest(path: str | Path, verify: bool = True) -> dict:
    """The manifest of a cache, after checking its version, that its files are there and (``verify``) the
    runtime digests' sha256; the posterior and the draws are checked where they are read."""
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
    if manifest.get(MANIFEST_CHECKSUM) != _manifest_checksum(manifest):
        raise CacheError(f"{mpath}: its checksum does not match its content (edited or damaged); refit")
    files = manifest.get("files", {})
    for name in (POSTERIOR, DIGESTS):
        if name not in files:
            raise CacheError(f"{mpath}: no checksum for {name}; the cache is incomplete")
        if not (path / name).is_file():
            raise CacheError(f"{path}: {name} is missing; the cache is incomplete")
    if verify:
        _check_file(path, DIGESTS, files[DIGESTS])
    return manifest


def _check_file(path: Path, name: str, sha256: str) -> None:
    if _sha256(path / name) != sha256:
        raise CacheError(f"{path / name}: sha256 does not match the manifest (truncated or modified); refit")


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


def holds_fit_of(path: str | Path, fingerprint: str, model_version: int, accept_failed: bool = False,
                 engine: str | None = None) -> bool:
    """Whether ``path`` holds an intact fit of the data with this fingerprint by this model version (and, when
    given, asked of this ``engine``) that passed its gate (or any such fit, with ``accept_failed``): a cache
    worth reusing instead of refitting."""
    try:
        manifest = read_manifest(path)
        same = (manifest["data_fingerprint"] == fingerprint
                and manifest["settings"].get("model_version") == model_version
                and (engine is None or manifest["settings"].get("config", {}).get("engine") == engine)
                and (manifest["diagnostics"]["passed"] or accept_failed))
        if same:  # every byte checked: a cache kept instead of a refit must be whole
            _check_file(Path(path), POSTERIOR, manifest["files"][POSTERIOR])
            read_runtime(path)
        return same
    except GaelpError:
        return False


def read_runtime(path: str | Path, verify: bool = True, campaigns: list[str | int | None] | None = None,
                 manifest: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Manifest and runtime arrays ([draw, slot, ...] float32, read-only views of memory-mapped files: only
    what a caller indexes is read).  ``campaigns``: the campaigns the caller reads, by name (one the model
    lacks: the new-campaign slot, as ``campaign_slot``; None: a one-campaign model's campaign) or slot
    index; only their draws are checked against their digests (``verify``), and only they may be read.
    None: every campaign, all checked.  ``manifest``: the cache's, if the caller has read it already
    (``read_manifest`` with the same ``verify``).  Numpy and the standard library only."""
    path = Path(path)
    manifest = read_manifest(path, verify=verify) if manifest is None else manifest
    names = manifest.get("campaigns")
    shapes = manifest.get("runtime_arrays")
    if not isinstance(names, list) or not isinstance(shapes, dict) or "cvr" not in shapes:
        raise CacheError(f"{path / MANIFEST}: no campaigns or runtime arrays listed; refit")
    slots = len(names) + 1
    arrays = {}
    for name, shape in shapes.items():
        file = path / RUNTIME / f"{name}.npy"
        try:
            memmap = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise CacheError(f"{file}: unreadable runtime file ({exc}); refit") from None
        if memmap.dtype != np.float32 or list(memmap.shape) != shape or shape[0] != slots:
            raise CacheError(f"{file}: shape {memmap.shape} ({memmap.dtype}) does not match the manifest's "
                             f"{shape} of {slots} campaign slots; refit")
        arrays[name] = memmap
    if verify:
        digests = np.load(path / DIGESTS, allow_pickle=False)
        if digests.shape != (slots, 32):
            raise CacheError(f"{path / DIGESTS}: {digests.shape[0]} digests for {slots} campaign slots; refit")
        index = {name: i for i, name in enumerate(names)}
        slot_of = lambda c: c if isinstance(c, int) else 0 if c is None else index.get(c, slots - 1)  # noqa: E731
        wanted = range(slots) if campaigns is None else sorted({slot_of(c) for c in campaigns})
        for slot in wanted:
            digest = hashlib.sha256()
            for memmap in arrays.values():
                digest.update(memmap[slot].data)
            if digest.digest() != digests[slot].tobytes():
                who = names[slot] if slot < len(names) else "the new-campaign slot"
                raise CacheError(f"{path / RUNTIME}: the draws of {who!r} do not match their sha256 "
                                 "(truncated or modified); refit")
    return manifest, {name: np.moveaxis(memmap, 0, 1) for name, memmap in arrays.items()}


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


MAX_FORECAST_WEEKS = 26  # a forecast (a plan, a prediction, a pacer's day) at most this far past the data's end
DRIFT_DAMPING_WEEKS = 8.0  # a trend's effect saturates at this many weeks of it (a damped trend)


def check_horizon(manifest: dict, when) -> None:
    """A ``UsageError`` if any of ``when`` (seconds since the epoch) lies more than ``MAX_FORECAST_WEEKS``
    past the data's end: a posterior of those weeks says little of a day half a year later; refit."""
    from .errors import UsageError

    try:
        end = dt.datetime.fromisoformat(manifest["period"][1]).timestamp() + 3600.0
    except (KeyError, TypeError, ValueError, IndexError):
        raise CacheError("the manifest has no valid data period; refit") from None
    ahead = (np.max(np.atleast_1d(np.asarray(when, np.float64))) - end) / WEEK_SECONDS
    if ahead > MAX_FORECAST_WEEKS:
        day = dt.datetime.fromtimestamp(float(np.max(when)), dt.timezone.utc).date()
        raise UsageError(f"{day} is {ahead:.0f} weeks after the data's end ({manifest['period'][1][:10]}); forecasts "
                         f"reach at most {MAX_FORECAST_WEEKS} weeks ahead: refit on recent data")


def drift_factor(arrays: dict, manifest: dict, slots, when, seed: int = 0) -> np.ndarray:
    """[draw, row]: how much the conversion rate of campaign slot ``slots[row]`` at ``when[row]`` (seconds
    since the epoch) is above the fitted rate (the data's last week):
    ``exp(trend d(h) + sigma_walk sqrt(h) z - sigma_walk^2 h / 2)``, ``h`` the weeks from that week's middle
    (``manifest["drift_anchor"]``; at least 0: rows inside the fitted weeks get the last week's level),
    ``d(h) = tau (1 - exp(-h / tau))`` the damped trend (``DRIFT_DAMPING_WEEKS``: a trend of the data's weeks
    is not carried on for ever), ``z`` standard normal per draw and slot, drawn from ``seed`` and the slot
    alone (the same whoever reads it).  The walk widens the intervals with the horizon and keeps the mean
    (its ``- sigma^2 h / 2``: without a trend, a day far ahead is expected at the last week's rate).  Ones
    when the fit has no drift.  Beyond ``MAX_FORECAST_WEEKS`` past the data, a ``UsageError``
    (``check_horizon``).  Numpy and the standard library only."""
    slots, when = np.atleast_1d(np.asarray(slots, np.int64)), np.atleast_1d(np.asarray(when, np.float64))
    check_horizon(manifest, when)
    if "drift" not in arrays:
        return np.ones((arrays["cvr"].shape[0], len(slots)))
    try:
        anchor = dt.datetime.fromisoformat(manifest["drift_anchor"]).timestamp()
    except (KeyError, TypeError, ValueError):
        raise CacheError("the manifest has drift draws but no valid drift_anchor; refit") from None
    weeks = np.maximum((when - anchor) / WEEK_SECONDS, 0.0)
    drift = arrays["drift"]
    unique, where = np.unique(slots, return_inverse=True)
    z = np.stack([np.random.default_rng([seed, int(s)]).standard_normal(drift.shape[0]) for s in unique], axis=1)
    z = z[:, where]
    trend, walk = drift[:, slots, 0].astype(np.float64), drift[:, slots, 1].astype(np.float64)
    damped = DRIFT_DAMPING_WEEKS * -np.expm1(-weeks / DRIFT_DAMPING_WEEKS)
    return np.exp(trend * damped + walk * np.sqrt(weeks) * z - 0.5 * walk**2 * weeks)


def read_posterior(path: str | Path, verify: bool = True, groups: tuple[str, ...] | None = None):
    """Manifest and the posterior DataTree loaded into memory: all of it, or only ``groups`` (paths such as
    ``"posterior"``: a sharded fit's file holds every shard's posterior, gigabytes at thousands of
    campaigns)."""
    import xarray as xr

    manifest = read_manifest(path, verify=verify)
    if verify:
        _check_file(Path(path), POSTERIOR, manifest["files"][POSTERIOR])
    if groups is None:
        return manifest, xr.load_datatree(Path(path) / POSTERIOR, engine="h5netcdf")
    with xr.open_datatree(Path(path) / POSTERIOR, engine="h5netcdf") as tree:
        return manifest, xr.DataTree.from_dict({g: tree[g].to_dataset(inherit=False).load() for g in groups})
