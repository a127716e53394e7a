"""The summary a fit prints (``gaelp-bayes fit`` and the demo): per-campaign rates, best hours, diagnostics."""

from __future__ import annotations

import numpy as np

from . import cache

SUMMARY_CAMPAIGNS = 20  # campaigns listed after a fit (their draws are all it reads)


def summary_slots(campaigns: int) -> list[int]:
    """The runtime slots a fit summary lists: the first ``SUMMARY_CAMPAIGNS`` campaigns and a new one."""
    return list(range(min(campaigns, SUMMARY_CAMPAIGNS))) + [campaigns]


def print_fit_summary(path: str, manifest: dict, arrays: dict) -> None:
    """A readable posterior summary: per-campaign rates (the first ``SUMMARY_CAMPAIGNS``), best hours,
    diagnostics."""
    diag = manifest["diagnostics"]
    names = manifest["campaigns"]
    listed = summary_slots(len(names))
    print(f"\nPosterior of hourly conversion rates: {path}")
    print(f"  data: {manifest['n_windows']} windows, {manifest['period'][0]} .. {manifest['period'][1]}, "
          f"hours in {manifest['timezone']}")
    print(f"  {'campaign':<20} {'cvr mean':>9} {'90% interval':>18} {'best hours (mean cvr)':<40}")
    for i in listed:
        if i == len(names) and len(names) > SUMMARY_CAMPAIGNS:
            print(f"  ... {len(names) - SUMMARY_CAMPAIGNS} more campaigns (gaelp-bayes allocate/report each)")
        name = names[i] if i < len(names) else "(new campaign)"
        cvr = arrays["cvr"][:, i].astype(np.float64)  # [draw, 7, 24]
        day = cvr.mean(axis=(1, 2))  # daily average rate per draw
        by_hour = cvr.mean(axis=(0, 1))
        best = np.argsort(by_hour)[::-1][:3]
        lo, hi = np.quantile(day, [0.05, 0.95])
        hours = ", ".join(f"{h:02d}h {by_hour[h]:.2%}" for h in best)
        print(f"  {name:<20} {day.mean():>9.2%} {f'[{lo:.2%}, {hi:.2%}]':>18} {hours:<40}")
    if "cpc" in arrays:
        cpc = [float(arrays["cpc"][:, i].mean()) for i in listed[:-1]]
        print("  cost per click (mean): " + ", ".join(f"{names[i]} {v:.2f}" for i, v in zip(listed, cpc))
              + (", ..." if len(names) > SUMMARY_CAMPAIGNS else ""))
    status = "PASSED" if diag["passed"] else "FAILED"
    if diag.get("engine") == "laplace":
        fallback = diag["fallback"]
        print(f"  diagnostics {status} (Laplace + importance sampling per campaign, fit "
              f"{manifest['fit_seconds']:.1f} s): max Pareto k-hat {diag['khat_max']:.2f}, min ESS "
              f"{diag['ess_min']:.0f}, population k-hat {diag['population_khat_max']:.2f}; "
              + (f"{len(fallback)} campaign(s) refitted with NUTS: {', '.join(fallback[:5])}"
                 + (", ..." if len(fallback) > 5 else "") if fallback else "no campaign needed NUTS"))
    else:
        print(f"  diagnostics {status}: max R-hat {diag['rhat_max']:.3f}, min bulk ESS {diag['ess_bulk_min']:.0f}, "
              f"min tail ESS {diag['ess_tail_min']:.0f}, divergences {diag['divergences']} "
              f"({diag['chains']} chains x {diag['draws']} draws, NUTS, fit {manifest['fit_seconds']:.1f} s)")
    print("  by part: " + ", ".join(f"{part} {'passed' if d.get('passed') else 'FAILED'}"
                                    for part, d in cache.part_verdicts(manifest).items()))
    if "drift" in arrays:  # trend per week (log rate) of each listed campaign, and the walk's sd
        drift = arrays["drift"]
        trends = [float(drift[:, i, 0].mean()) for i in listed[:-1]]
        print(f"  drift of the conversion rate per week (trend, from {manifest['drift_anchor'][:10]}): "
              + ", ".join(f"{names[i]} {np.expm1(v):+.1%}" for i, v in zip(listed, trends))
              + (", ..." if len(names) > SUMMARY_CAMPAIGNS else "")
              + f"; random walk sd {float(drift[:, 0, 1].mean()):.3f} per week")
    known = manifest["settings"].get("known_value_per_conversion")
    if known:
        print("  revenue per conversion is a known value, not sampled (every conversion of a campaign is worth "
              "the same): " + ", ".join(f"{n} {v:.2f}" for n, v in known.items()))
