"""Uncertainty report of a cached posterior: figures (PNG) and one self-contained HTML file.

``build_report(models/NAME)`` writes ``reports/NAME.html`` (figures embedded as
data URIs, so it opens offline and prints on its own) and the same figures as
PNG files under ``reports/NAME_figures/``.  Everything is read from the cache; nothing
is refitted.  A fit that failed its diagnostics is still reported (that is
when a report is most needed), under a red banner.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache
from .errors import UsageError
from .model import KEY_PARAMETERS
from .outputs import atomic_file, check_output, is_model_cache

DOW_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
BAND_50, BAND_90 = (0.25, 0.75), (0.05, 0.95)
MAX_PANELS = 6  # campaigns drawn in per-campaign figures
CHECKED_CAMPAIGNS = 200  # at most this many campaigns' draws are read (the predictive check's, evenly spread)
STYLE = {
    "figure.dpi": 100, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "figure.constrained_layout.use": True,
    "text.parse_math": False,  # campaign names are text: 'Promo $x^^y$' must not be parsed as mathtext
}
FIGURES_MARK = ".gaelp-report-figures"  # marks a figure folder as a report's own (replaced on the next run)
COLOR, DATA_COLOR = "#1f5fa8", "#d1495b"


@dataclass
class Figure:
    name: str  # file stem under reports/NAME_figures/
    caption: str
    png: bytes


@dataclass
class Context:
    """What every section reads: the cache, one campaign's choice and the plan's day."""

    model_dir: Path
    manifest: dict
    arrays: dict[str, np.ndarray]
    tree: object  # xarray.DataTree
    cells: object  # xarray.Dataset of the fitted cells
    campaign: str
    slot: int
    shown: list[int]  # campaigns drawn in per-campaign figures: the chosen one first, then by clicks
    checked: list[int]  # the campaigns whose draws were read (every one up to CHECKED_CAMPAIGNS)
    date: dt.date
    budget: float | None
    tz: str


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _hour_axis(ax, tz: str) -> None:
    ax.set_xlim(-0.5, 23.5)
    ax.set_xticks(range(0, 24, 3))
    ax.set_xlabel(f"hour of day ({tz})")


def _bands(ax, draws: np.ndarray) -> None:
    """Posterior mean by hour with its 90% and 50% credible bands, from draws [draw, 24]."""
    q = np.quantile(draws, [*BAND_90, *BAND_50], axis=0)
    ax.fill_between(range(24), q[0], q[1], color=COLOR, alpha=0.18, label="90% interval")
    ax.fill_between(range(24), q[2], q[3], color=COLOR, alpha=0.35, label="50% interval")
    ax.plot(range(24), draws.mean(axis=0), color=COLOR, lw=2, label="posterior mean")


# ----- sections: each returns (html, figures) ------------------------------------------------------------
def data_summary(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    cells, m = ctx.cells, ctx.manifest
    start, end = (dt.datetime.fromisoformat(p) for p in m["period"])
    hours = int((end - start).total_seconds() // 3600) + 1
    rows = []
    for c, name in enumerate(m["campaigns"]):
        sel = cells["campaign"].values == c
        windows = int(cells["windows"].values[sel].sum())
        clicks, conv = int(cells["clicks"].values[sel].sum()), int(cells["conversions"].values[sel].sum())
        spend = f"{cells['spend'].values[sel].sum():,.2f}" if "spend" in cells else "-"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{windows:,}</td><td>{hours - windows:,}</td>"
                    f"<td>{clicks:,}</td><td>{conv:,}</td><td>{conv / max(clicks, 1):.2%}</td><td>{spend}</td></tr>")
    missing = [] if m["has_spend"] else ["spend (no cost per click: allocation in clicks, no runtime pacing)"]
    if not m["has_revenue"]:
        missing.append("revenue (no ROAS or revenue objective)")
    text = (f"<p>Period {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({hours:,} hours), "
            f"{len(m['campaigns'])} campaign(s), {m['n_windows']:,} hourly windows; hours and days below are in "
            f"<b>{html.escape(ctx.tz)}</b>. A gap is an hour of the period with no window for that campaign."
            + (f" Not in the data: {'; '.join(missing)}." if missing else "") + "</p>"
            "<table><tr><th>campaign</th><th>windows</th><th>gaps (hours)</th><th>clicks</th><th>conversions</th>"
            "<th>conv. rate</th><th>spend</th></tr>" + "".join(rows) + "</table>")
    grid = np.zeros((7, 24))
    np.add.at(grid, (cells["dow"].values, cells["hour"].values), cells["windows"].values)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    im = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=max(grid.max(), 1) * 1.3)
    ax.set_yticks(range(7), DOW_NAMES)
    _hour_axis(ax, ctx.tz)
    ax.grid(False)
    ax.set_title("Windows logged per day of week and hour (all campaigns)")
    fig.colorbar(im, ax=ax, label="windows")
    figures = [Figure("data_coverage", "How much history each day-of-week x hour cell has; white cells are "
                      "gaps the model fills by pooling.", _png(fig))]
    if m.get("conversion_delay"):
        words, figure = _conversion_delay(m["conversion_delay"])
        text += words
        figures.append(figure)
    return text, figures


def _conversion_delay(quantiles: list[float]) -> tuple[str, Figure]:
    """The conversion delay the fit was censored with (its quantiles, from the manifest)."""
    import matplotlib.pyplot as plt

    q = np.asarray(quantiles, dtype=np.float64)
    share = np.linspace(0, 1, q.size)
    within = {label: float(np.searchsorted(q, seconds, side="right") / q.size)
              for label, seconds in (("a minute", 60), ("an hour", 3600), ("a day", 86400))}
    text = ("<p>Conversions arrive after their click: the windows were counted up to when the log was exported "
            "(<code>observed_until</code>), and the fit counted each window's clicks by the share of conversions "
            "reported by then. Reported within " + ", ".join(f"{k}: {v:.0%}" for k, v in within.items())
            + ". The runtime pacer waits for postbacks by the same delay.</p>")
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.step(np.maximum(q, 1.0), share, where="post", color=COLOR, lw=2)
    ax.set_xscale("log")
    for seconds in (60, 3600, 86400):
        ax.axvline(seconds, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("time from click to report (seconds, log scale; dotted: a minute, an hour, a day)")
    ax.set_ylabel("share reported")
    ax.set_ylim(0, 1.02)
    ax.set_title("Conversion delay (the delay sample the fit used)")
    return text, Figure("conversion_delay", "Share of conversions reported within a given time of their click.",
                        _png(fig))


def hourly_rates(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    shown = ctx.shown
    cells = ctx.cells
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.3 * len(shown)), squeeze=False, sharex=True)
    for ax, c in zip(axes[:, 0], shown):
        _bands(ax, ctx.arrays["cvr"][:, c].astype(np.float64).mean(axis=1) * 100)  # averaged over weekdays
        sel = cells["campaign"].values == c
        clicks = np.bincount(cells["hour"].values[sel], cells["clicks"].values[sel], minlength=24)
        conv = np.bincount(cells["hour"].values[sel], cells["conversions"].values[sel], minlength=24)
        seen = clicks > 0
        size = 10 + 140 * clicks[seen] / max(clicks.max(), 1)
        ax.scatter(np.flatnonzero(seen), 100 * conv[seen] / clicks[seen], s=size, color=DATA_COLOR, alpha=0.7,
                   edgecolor="white", label="observed (size: clicks)", zorder=3)
        ax.set_title(f"{ctx.manifest['campaigns'][c]}: conversion rate by hour")
        ax.set_ylabel("conversions per click (%)")
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=2)
    _hour_axis(axes[-1, 0], ctx.tz)
    more = len(ctx.manifest["campaigns"]) - len(shown)
    return ("<p>Posterior hourly conversion rate, averaged over days of the week, with 50% and 90% credible "
            "bands; dots are the observed rates (all weekdays pooled), sized by clicks. Hours with few clicks "
            "are pulled towards the campaign's curve and the other campaigns (partial pooling)."
            + (f" {more} more campaign(s) not drawn." if more > 0 else "") + "</p>",
            [Figure("hourly_conversion_rate", "Posterior conversion rate per hour (bands: 50%/90%) over the "
                    "observed rates (dots, sized by clicks).", _png(fig))])


FORECAST_WEEKS = 4  # the level-over-time figure's forecast horizon


def level_over_time(ctx: Context) -> tuple[str, list[Figure]]:
    """The conversion level week by week (the drift: fitted weeks with their band, observed weekly rates)
    and its forecast, whose band widens with the horizon."""
    import matplotlib.pyplot as plt

    if "drift" not in ctx.arrays:
        return ("<p>This fit has no drift of the conversion level over time (data of one week or less, or "
                "fitted with <code>--no-drift</code>): every week of the data counts alike and forecasts do "
                "not move with the date.</p>", [])
    cells, post = ctx.cells, ctx.tree["posterior"]
    anchor = dt.datetime.fromisoformat(ctx.manifest["drift_anchor"])
    shown = ctx.shown[:3]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.5 * len(shown)), squeeze=False)
    for ax, c in zip(axes[:, 0], shown):
        name = ctx.manifest["campaigns"][c]
        sel = cells["campaign"].values == c
        trials, conv = cells["weekly_trials"].values[sel], cells["weekly_conversions"].values[sel]
        weeks = np.arange(trials.shape[1])
        clicks = cells["clicks"].values[sel]
        cvr = ctx.arrays["cvr"][:, c, cells["dow"].values[sel], cells["hour"].values[sel]].astype(np.float64)
        last = (cvr * clicks).sum(axis=1) / max(clicks.sum(), 1)  # [draw]: the last week's click-weighted rate
        past = [anchor - dt.timedelta(weeks=int(w)) for w in weeks]
        if "level_offset" in post and name in post["campaign"].values:  # a sharded fit's shard campaigns: not here
            offset = post["level_offset"].sel(campaign=name).isel(week=weeks).values.reshape(-1, len(weeks))
            q = np.quantile(np.exp(offset), BAND_90, axis=0) * last.mean() * 100
            ax.fill_between(past, q[0], q[1], color=COLOR, alpha=0.18)
            ax.plot(past, np.exp(offset).mean(axis=0) * last.mean() * 100, color=COLOR, lw=2, label="fitted level")
        rate = conv.sum(axis=0) / np.maximum(trials.sum(axis=0), 1e-9) * 100
        ax.scatter(past, rate, color=DATA_COLOR, s=18, zorder=3, label="observed weekly rate")
        ahead = np.arange(FORECAST_WEEKS + 1)
        factor = cache.drift_factor(ctx.arrays, ctx.manifest, np.full(len(ahead), c),
                                    anchor.timestamp() + ahead * cache.WEEK_SECONDS)
        forecast = last[:, None] * factor * 100
        future = [anchor + dt.timedelta(weeks=int(h)) for h in ahead]
        q = np.quantile(forecast, BAND_90, axis=0)
        ax.fill_between(future, q[0], q[1], color="#e07b00", alpha=0.2)
        ax.plot(future, forecast.mean(axis=0), color="#e07b00", lw=2, ls="--", label="forecast (90% band)")
        ax.set_title(f"{name}: conversion rate by week (click-weighted over its hours)")
        ax.set_ylabel("conversions per click (%)")
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(loc="lower left", fontsize=8, ncol=3)
    trend = ctx.arrays["drift"][:, ctx.slot, 0].astype(np.float64)
    lo, hi = np.expm1(np.quantile(trend, BAND_90))
    return (f"<p>The conversion level moves over time: {html.escape(ctx.campaign)}'s trend is "
            f"<b>{np.expm1(trend.mean()):+.1%} per week</b> (90% interval {lo:+.1%} to {hi:+.1%}), plus a random "
            f"walk of sd {float(ctx.arrays['drift'][:, ctx.slot, 1].mean()):.3f} per week on the log scale. The "
            "hourly rates and heatmaps here, like the runtime cache, are those of the data's last week; the "
            "allocation below, predictions and the pacer project them to their own date, with intervals that "
            "widen the further ahead it is.</p>",
            [Figure("conversion_level_over_time", "Conversion rate by week: observed (dots), fitted level "
                    "(blue, 90% band) and forecast (orange, 90% band widening with the horizon).", _png(fig))])


def heatmaps(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    shown = ctx.shown[:3]
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 2.4 * len(shown)), squeeze=False)
    for row, c in zip(axes, shown):
        cvr = ctx.arrays["cvr"][:, c].astype(np.float64)
        mean = cvr.mean(axis=0) * 100
        lo, hi = np.quantile(cvr, BAND_90, axis=0) * 100
        name = ctx.manifest["campaigns"][c]
        for ax, grid, title, cmap, label in ((row[0], mean, "posterior mean", "viridis", "conv. rate (%)"),
                                             (row[1], hi - lo, "90% interval width", "magma_r", "width (pp)")):
            im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0)
            ax.set_yticks(range(7), DOW_NAMES)
            _hour_axis(ax, ctx.tz)
            ax.grid(False)
            ax.set_title(f"{name}: {title}")
            fig.colorbar(im, ax=ax, label=label)
    return ("<p>Day of week x hour: where the conversion rate is high (left) and how sure we are (right: the "
            "width of the 90% interval in percentage points; darker is less certain).</p>",
            [Figure("heatmap_conversion_rate", "Posterior mean conversion rate and its 90% interval width by day "
                    "of week and hour.", _png(fig))])


def costs(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    if "cpc" not in ctx.arrays:
        return ("<p>No spend column in the fitted data: cost per click and conversions per dollar are "
                "unknown.</p>", [])
    c, dow = ctx.slot, ctx.date.weekday()
    cpc = ctx.arrays["cpc"][:, c, dow].astype(np.float64)
    per_dollar = ctx.arrays["cvr"][:, c, dow].astype(np.float64) / cpc
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for ax, draws, title, label in ((axes[0], cpc, "cost per click", "money per click"),
                                    (axes[1], per_dollar, "conversions per unit of spend", "conversions per money")):
        _bands(ax, draws)
        ax.set_title(f"{ctx.campaign}, {DOW_NAMES[dow]}: {title}")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        _hour_axis(ax, ctx.tz)
    axes[0].legend(fontsize=8)
    return (f"<p>What an hour costs and what it buys, for {html.escape(ctx.campaign)} on a "
            f"{DOW_NAMES[dow]}: the allocation favours hours with high conversions per unit of spend.</p>",
            [Figure("cost_by_hour", "Cost per click and conversions per unit of spend by hour (bands 50%/90%).",
                    _png(fig))])


def allocation(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    from .allocate import plan_day

    # a failed fit is still reported (under its banner), so the cache's gate is not checked here
    plan = plan_day(ctx.manifest, ctx.arrays, ctx.budget, ctx.date, ctx.campaign,
                    clicks_as_cost="cpc" not in ctx.arrays)
    unit = "money" if "cpc" in ctx.arrays else "clicks"
    amounts = np.array([float(a) for a in plan.amounts])
    mean, lo, hi = plan.hourly_conversions
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(range(24), amounts, color=COLOR, alpha=0.8, label=f"amount ({unit})")
    ax.axhline(float(plan.budget) / 24, color="grey", ls="--", lw=1, label="even pacing")
    ax.set_ylabel(f"amount ({unit})")
    ax2 = ax.twinx()
    ax2.errorbar(range(24), mean, yerr=[mean - lo, hi - mean], fmt="o", color=DATA_COLOR, ms=4, capsize=2,
                 label="expected conversions (90%)")
    ax2.set_ylabel("expected conversions")
    ax2.set_ylim(bottom=0)
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    _hour_axis(ax, ctx.tz)
    ax.set_title(f"Allocation of {plan.budget:.2f} for {plan.campaign} on {plan.date}")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    m, l_, h_ = plan.expected_conversions
    words = (f"<p class='big'>Budget <b>{plan.budget:.2f}</b> ({unit}) for <b>{html.escape(plan.campaign)}</b> on "
             f"{plan.date}: expected <b>{m:.1f}</b> conversions (90% interval {l_:.1f} to {h_:.1f})"
             + (f", expected {'cost' if unit == 'money' else 'clicks'} per conversion {plan.expected_cpa:.2f}"
                if plan.expected_cpa else "") + ".</p>"
             f"<p><b>Confidence {plan.confidence:.0%}</b>: if the model is right, there is a {plan.confidence:.0%} "
             f"chance that this plan gets at least {plan.confidence_tolerance:.0%} of the conversions of the plan "
             f"we would choose if we knew the true hourly rates. <b>{plan.p_beats_even:.0%}</b> is the chance it "
             f"beats spreading the budget evenly over the 24 hours.</p>")
    words += "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in plan.warnings)
    rows = "".join(f"<tr><td>{h:02d}:00</td><td>{a:.2f}</td><td>{mean[h]:.2f}</td><td>{lo[h]:.2f} - {hi[h]:.2f}"
                   "</td></tr>" for h, a in enumerate(amounts))
    words += ("<details><summary>the 24 amounts</summary><table><tr><th>hour</th><th>amount</th>"
              f"<th>exp. conversions</th><th>90% interval</th></tr>{rows}</table></details>")
    figures = [Figure("allocation", "Hourly amounts (bars) against even pacing (dashed) and each hour's expected "
                      "conversions with 90% intervals.", _png(fig))]
    if plan.runtime_plan is not None:
        figures.append(_pacing_curve(ctx, amounts, plan.runtime_plan, plan.runtime_confidence))
    else:
        words += ("<p>No spend data, so no runtime pacing curve: the runtime pacer needs cost per click.</p>")
    return words, figures


def _pacing_curve(ctx: Context, amounts: np.ndarray, runtime_plan: list[float], confidence: float) -> Figure:
    """The expected cumulative spend the runtime pacer follows (its auction-aware plan) for this day."""
    import matplotlib.pyplot as plt

    budget = float(amounts.sum())
    fig, ax = plt.subplots(figsize=(8, 3))
    hours = np.arange(25)
    ax.plot(hours, np.concatenate([[0], np.cumsum(runtime_plan)]), color=COLOR, lw=2.5,
            label=f"runtime pacer's plan (confidence {confidence:.0%})")
    ax.plot(hours, np.concatenate([[0], np.cumsum(amounts)]), color=DATA_COLOR, lw=1.5, ls="-.",
            label="allocation above (linear response)")
    ax.plot(hours, budget * hours / 24, color="grey", ls="--", lw=1, label="even pacing")
    ax.axhline(budget, color="black", lw=0.8)
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel(f"hour of day ({ctx.tz})")
    ax.set_ylabel("cumulative spend (money)")
    ax.set_title(f"Expected cumulative spend, {ctx.campaign} on {ctx.date}")
    ax.legend(fontsize=8, loc="upper left")
    return Figure("pacing_curve", "The cumulative spend curve the runtime pacer steers to (its auction-aware plan: "
                  "bids proportional to the conversion rate), beside the linear allocation and even pacing.",
                  _png(fig))


def diagnostics(ctx: Context) -> tuple[str, list[Figure]]:
    import arviz_plots as azp
    import matplotlib.pyplot as plt
    import xarray as xr

    diag, settings = ctx.manifest["diagnostics"], ctx.manifest["settings"]
    if diag.get("engine") == "laplace":
        return laplace_diagnostics(ctx)
    gate = diag["gate"]
    rows = "".join(
        f"<tr class='{'ok' if d['passed'] else 'bad'}'><td>{part}</td><td>{d['rhat_max']:.3f}</td>"
        f"<td>{d['ess_bulk_min']:.0f}</td><td>{d['ess_tail_min']:.0f}</td><td>{d['divergences']}</td>"
        f"<td>{'pass' if d['passed'] else 'FAIL'}</td></tr>"
        for part, d in cache.part_verdicts(ctx.manifest).items())
    text = (f"<p>Gate: R-hat &le; {gate['rhat_max']}, bulk and tail ESS &ge; {gate['ess_bulk_min']}, "
            f"divergences &le; {gate['divergences_max']}. Sampler {settings['sampler']}, {settings['chains']} chains "
            f"x {settings['draws']} draws after {settings['tune']} tuning steps, fitted in "
            f"{ctx.manifest['fit_seconds']:.0f} s.</p><table><tr><th>model part</th><th>max R-hat</th>"
            f"<th>min bulk ESS</th><th>min tail ESS</th><th>divergences</th><th>gate</th></tr>{rows}</table>")
    post = ctx.tree["posterior"].to_dataset()
    keys = [v for v in KEY_PARAMETERS if v in post]
    subset = post[keys]
    if "campaign" in subset.dims:
        subset = subset.isel(campaign=slice(0, 2))
    pc = azp.plot_rank(xr.DataTree.from_dict({"posterior": subset}), backend="matplotlib")
    fig = pc.viz["chart"].item() if "chart" in pc.viz else plt.gcf()
    fig.suptitle("Rank ECDF differences per chain (key parameters): flat, overlapping lines mean the chains agree")
    return text, [Figure("rank_plot", "ArviZ rank plot of key parameters: each line is one chain; lines leaving "
                         "the envelope (black dots) flag disagreement between chains.", _png(fig))]


def laplace_diagnostics(ctx: Context) -> tuple[str, list[Figure]]:
    """The Laplace engine's gate: per part, the population's importance weights and every campaign's (Pareto
    k-hat, effective sample size), and the campaigns refitted with NUTS; a figure of the campaigns' k-hats."""
    import matplotlib.pyplot as plt

    rows = "".join(
        f"<tr class='{'ok' if d['passed'] else 'bad'}'><td>{part}</td><td>{d['population_khat']:.2f}</td>"
        f"<td>{d['population_ess']:.0f}</td><td>{d['khat_max']:.2f}</td><td>{d['ess_min']:.0f}</td>"
        f"<td>{d['quantity_khat_max']:.2f}</td><td>{len(d['fallback'])}</td>"
        f"<td>{'pass' if d['passed'] else 'FAIL'}</td></tr>"
        for part, d in cache.part_verdicts(ctx.manifest).items())
    first = next(iter(cache.part_verdicts(ctx.manifest).values()))
    text = (f"<p>Fitted in {ctx.manifest['fit_seconds']:.1f} s by the Laplace engine: each part's population "
            f"(hyperparameters by nested Laplace on {first['population_members']} campaign(s), importance-weighted), "
            f"then each campaign's latent values by a Laplace approximation under each population draw, corrected "
            f"by {first['proposals']} Pareto-smoothed importance draws. Gate per campaign: k-hat &le; "
            f"{first['khat_threshold']:.2f}, ESS &ge; 400, k-hat of each exported quantity's mean and variance "
            f"&lt; 0.7, and no conflict between its data and the population; a campaign that fails is refitted "
            f"with NUTS under the same population.</p><table><tr><th>model part</th><th>population k-hat</th>"
            f"<th>population ESS</th><th>max campaign k-hat</th><th>min campaign ESS</th>"
            f"<th>max quantity k-hat</th><th>refitted with NUTS</th><th>gate</th></tr>{rows}</table>")
    gate = ctx.tree["laplace"].to_dataset() if "laplace" in ctx.tree.children else None
    if gate is None:
        return text, []
    fig, ax = plt.subplots(figsize=(7, 3))
    for part in gate["part"].values:
        ax.hist(gate["khat"].sel(part=part).values, bins=30, histtype="step", lw=1.5, label=str(part))
    ax.axvline(first["khat_threshold"], color="#c0392b", ls="--", lw=1, label="gate")
    ax.set_xlabel("Pareto k-hat of a campaign's importance weights")
    ax.set_ylabel("campaigns")
    ax.legend(fontsize=8)
    return text, [Figure("importance_khat", "Each campaign's Pareto k-hat per model part: left of the dashed line "
                         "its importance-weighted draws are reliable.", _png(fig))]


def predictive_check(ctx: Context) -> tuple[str, list[Figure]]:
    import matplotlib.pyplot as plt

    from .predict import randomized_pit

    cells = ctx.cells
    keep = np.isin(cells["campaign"].values, ctx.checked)
    c, d, h = (cells[k].values[keep] for k in ("campaign", "dow", "hour"))
    clicks, observed = cells["clicks"].values[keep], cells["conversions"].values[keep]
    p = ctx.arrays["cvr"][:400][:, c, d, h].astype(np.float64)  # [draw, cell]
    rng = np.random.default_rng(0)
    replicated = rng.binomial(clicks[None, :], p)
    lo, hi = np.quantile(replicated, BAND_90, axis=0)
    covered = float(np.mean((observed >= lo) & (observed <= hi)))
    pit = randomized_pit(observed, clicks, p, np.random.default_rng(1))
    pit_cov = float(np.mean((pit >= 0.05) & (pit <= 0.95)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    mean = replicated.mean(axis=0)
    order = np.argsort(mean)
    step = max(1, len(order) // 300)
    idx = order[::step]
    axes[0].vlines(np.arange(len(idx)), lo[idx], hi[idx], color=COLOR, alpha=0.4, lw=1.5, label="90% predictive")
    axes[0].scatter(np.arange(len(idx)), observed[idx], s=6, color=DATA_COLOR, zorder=3, label="observed")
    axes[0].set_xlabel("cells sorted by predicted conversions" + (f" (every {step}th)" if step > 1 else ""))
    axes[0].set_ylabel("conversions per cell")
    axes[0].set_yscale("symlog", linthresh=5)
    axes[0].set_title("Observed vs predicted conversions per cell")
    axes[0].legend(fontsize=8)
    axes[1].hist(pit, bins=10, range=(0, 1), color=COLOR, alpha=0.8, edgecolor="white")
    axes[1].axhline(len(pit) / 10, color="black", ls="--", lw=1, label="calibrated")
    axes[1].set_xlabel("randomized PIT of the observed count")
    axes[1].set_ylabel("cells")
    axes[1].set_title("PIT histogram (flat = calibrated)")
    axes[1].legend(fontsize=8)
    sample = (f" of {len(ctx.checked)} campaigns spread over all {len(ctx.manifest['campaigns'])}"
              if len(ctx.checked) < len(ctx.manifest["campaigns"]) else "")
    text = (f"<p>Each fitted cell's conversions against the posterior predictive given its clicks (in-sample). "
            f"The 90% predictive interval covers <b>{covered:.1%}</b> of {len(observed):,} cells{sample} (inclusive "
            f"intervals over-cover small counts); the randomized PIT lies in its central 90% for "
            f"<b>{pit_cov:.1%}</b> (ideal 90%). For calibration on held-out data use "
            "<code>gaelp-bayes predict</code> on later windows.</p>")
    return text, [Figure("predictive_check", "Posterior predictive check: observed cell conversions against 90% "
                         "predictive intervals, and the PIT histogram.", _png(fig))]


SECTIONS = (("Data", data_summary), ("Conversion rate by hour", hourly_rates),
            ("Conversion level over time", level_over_time),
            ("When and how sure", heatmaps), ("Cost and value by hour", costs),
            ("Allocation", allocation), ("Can the fit be trusted?", diagnostics),
            ("Posterior predictive check", predictive_check))

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #1f5fa8;padding-bottom:.2em;margin-top:1.6em}
.banner{padding:.8em 1em;border-radius:6px;font-weight:bold;margin:1em 0}
.pass{background:#e3f4e6;border:1px solid #2e8540}.fail{background:#fde2e2;border:1px solid #c0392b}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f2f4f7}td:first-child{text-align:left}tr.bad td{background:#fde2e2}
figure{margin:1em 0;break-inside:avoid;page-break-inside:avoid}img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}.big{font-size:1.1em}.warn{color:#a04000}.meta{color:#666;font-size:.9em}
@media print{body{max-width:none;margin:0}h2{break-after:avoid}details{display:block}}
"""

# Set on load: 'ok' when every figure decoded (the browser test reads it), else the broken figures' names.
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var bad = Array.from(document.images).filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-rendered', bad.length ? 'broken:' + bad.map(function (i) { return i.alt; }) : 'ok');
});
</script>"""


def _context(model_dir: str | Path, budget: float | None, date: str | None, campaign: str | None) -> Context:
    from .allocate import AllocationError, plan_date

    model_dir = Path(model_dir)
    manifest = cache.read_manifest(model_dir)
    groups = ("posterior", "observed_data") + (("laplace",) if manifest["diagnostics"].get("engine") == "laplace" else ())
    manifest, tree = cache.read_posterior(model_dir, groups=groups)
    name, slot, _ = cache.campaign_slot(manifest, campaign or manifest["campaigns"][0], AllocationError)
    names = manifest["campaigns"]
    if slot >= len(names):
        raise AllocationError(f"campaign {campaign!r} is not in {model_dir} ({', '.join(names)})")
    cells = tree["observed_data"].to_dataset()
    clicks = np.bincount(cells["campaign"].values, cells["clicks"].values, minlength=len(names))
    shown = [slot] + [int(c) for c in np.argsort(-clicks, kind="stable") if c != slot][:MAX_PANELS - 1]
    spread = np.linspace(0, len(names) - 1, min(len(names), CHECKED_CAMPAIGNS)).round().astype(int)
    checked = sorted(set(shown) | set(spread.tolist()))
    _, arrays = cache.read_runtime(model_dir, campaigns=[names[c] for c in checked])
    day = plan_date(date, manifest["timezone"], manifest)
    if budget is None:  # half of what the campaign usually spends (or clicks) in a day
        unit_cost = arrays["cpc"][:, slot, day.weekday()] if "cpc" in arrays else 1.0
        budget = round(0.5 * float((arrays["volume"][:, slot, day.weekday()] * unit_cost).mean(0).sum()), 2)
    elif not budget > 0:
        raise AllocationError("--budget must be positive")
    return Context(model_dir, manifest, arrays, tree, cells, name, slot, shown, checked, day, budget,
                   manifest["timezone"])


def figure_folder(html_path: str | Path) -> Path:
    """Where a report's figures go: ``reports/NAME.html`` -> ``reports/NAME_figures/`` (a suffix no model
    folder carries by default, so a report written beside its model never collides with it)."""
    html_path = Path(html_path)
    return html_path.with_name(f"{html_path.stem}_figures")


def build_report(model_dir: str | Path, out: str | Path | None = None, budget: float | None = None,
                 date: str | None = None, campaign: str | None = None, overwrite: bool = False) -> Path:
    """Write the HTML report (default ``reports/<model name>.html``) and its figures beside it
    (``figure_folder``); returns the path.  An existing page, or a figure folder that is not this
    command's own, is replaced only with ``overwrite``; a model cache never."""
    out = Path(out) if out else Path("reports") / f"{Path(model_dir).name}.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {out}: the report is an .html file")
    fig_dir = figure_folder(out)
    if is_model_cache(fig_dir):
        raise UsageError(f"--out {out}: its figure folder {fig_dir} is a model cache; choose another --out")
    check_output(out, inputs=[model_dir], overwrite=overwrite)
    check_output(fig_dir, inputs=[model_dir], folder=True, overwrite=overwrite, mark=FIGURES_MARK)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = _context(model_dir, budget, date, campaign)
    diag = ctx.manifest["diagnostics"]
    body, figures = [], []
    with plt.rc_context(STYLE):
        for title, section in SECTIONS:
            text, figs = section(ctx)
            body.append(f"<section><h2>{html.escape(title)}</h2>{text}")
            for f in figs:
                data = base64.b64encode(f.png).decode()
                body.append(f"<figure><img alt='{f.name}' src='data:image/png;base64,{data}'>"
                            f"<figcaption>{html.escape(f.caption)} (<code>{fig_dir.name}/{f.name}.png</code>)"
                            "</figcaption></figure>")
            body.append("</section>")
            figures += figs
    failed = cache.failed_parts(ctx.manifest)
    if not failed and diag.get("engine") == "laplace":
        banner = (f"<div class='banner pass'>Fit PASSED its diagnostics gate: max Pareto k-hat "
                  f"{diag['khat_max']:.2f}, min ESS {diag['ess_min']:.0f}, {len(diag['fallback'])} campaign(s) "
                  "refitted with NUTS.</div>")
    elif not failed:
        banner = (f"<div class='banner pass'>Fit PASSED its diagnostics gate: max R-hat {diag['rhat_max']:.3f}, "
                  f"min bulk ESS {diag['ess_bulk_min']:.0f}, min tail ESS {diag['ess_tail_min']:.0f}, "
                  f"{diag['divergences']} divergences.</div>")
    else:
        banner = (f"<div class='banner fail'>Fit FAILED its diagnostics gate in {cache.parts_phrase(failed)} "
                  f"({html.escape('; '.join(diag['failures']))}): do not trust "
                  f"those numbers. {html.escape(cache.consumers_left(failed))} Refit with more tuning or draws."
                  "</div>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gaelp_bayes report: "
            f"{html.escape(ctx.model_dir.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>Uncertainty report: {html.escape(ctx.model_dir.name)}</h1>"
            f"<p class='meta'>Model {html.escape(str(ctx.model_dir))}, fitted {ctx.manifest['created_at']}, "
            f"gaelp_bayes {ctx.manifest['package_version']}; report made "
            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Hours are local to "
            f"{html.escape(ctx.tz)}.</p>{banner}{''.join(body)}{CHECK_SCRIPT}</body></html>")
    _write_atomic(out, fig_dir, page, figures)
    return out


def _write_atomic(out: Path, fig_dir: Path, page: str, figures: list[Figure]) -> None:
    """The page through a temp file, the figures to a temp folder renamed into place: nothing half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fig_dir.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        (tmp / FIGURES_MARK).write_text("figures of a gaelp_bayes report; replaced when it is written again\n")
        for f in figures:
            (tmp / f"{f.name}.png").write_bytes(f.png)
        with atomic_file(out) as tmp_html:
            tmp_html.write_text(page, encoding="utf-8")
            cache._replace_dir(tmp, fig_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----- simulation figures (gaelp-bayes simulate) ------------------------------------------------------------
POLICY_COLORS = {"even": "grey", "legacy": "#e39b2d", "plugin": "#7a5cad", "bayes": COLOR, "bayes-static": "#5fa8d3",
                 "bayes-dg": "#3a9d5d"}


def simulation_figures(trace: dict, out_dir: str | Path, scenario: str) -> list[Path]:
    """Cumulative spend against the pacer's plan, and the mean bid per hour, of one traced campaign-day
    (``sim.trace_day``); PNG files ``<scenario>_spend.png`` and ``<scenario>_bids.png`` under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hours, budget = trace["hours"], trace["budget"]
    title = f"{scenario}: {trace['campaign']} on {trace['date']}"
    paths = []
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.4))
        if trace["plan"] is not None:
            ax.plot(np.arange(25), np.concatenate([[0], np.cumsum(trace["plan"])]), color="black", lw=1, ls=":",
                    label="bayes pacer's plan (start of day)")
        for policy, res in trace["policies"].items():
            ax.plot(np.concatenate([[0], hours]), np.concatenate([[0], res["spend"]]),
                    color=POLICY_COLORS.get(policy), lw=2 if policy == "bayes" else 1.3, label=policy)
        ax.axhline(budget, color="black", lw=0.8)
        ax.set(xlim=(0, 24), xticks=range(0, 25, 3), xlabel="hour of day (UTC)", ylabel="cumulative spend (money)",
               title=f"Cumulative spend vs plan, {title} (budget {budget:.2f})")
        ax.legend(fontsize=8, loc="upper left")
        paths.append(out_dir / f"{scenario}_spend.png")
        paths[-1].write_bytes(_png(fig))

        fig, ax = plt.subplots(figsize=(8, 3.4))
        hour = np.minimum(hours.astype(int), 23)
        for policy, res in trace["policies"].items():
            total = np.bincount(hour, res["bids"], minlength=24)
            count = np.maximum(np.bincount(hour, minlength=24), 1)
            ax.plot(range(24), total / count, color=POLICY_COLORS.get(policy), lw=2 if policy == "bayes" else 1.3,
                    marker="o", ms=3, label=policy)
        _hour_axis(ax, "UTC")
        ax.set(ylabel="mean bid per opportunity (money; 0 = no bid)", title=f"Bids by hour, {title}")
        ax.legend(fontsize=8, loc="upper left")
        paths.append(out_dir / f"{scenario}_bids.png")
        paths[-1].write_bytes(_png(fig))
    return paths
