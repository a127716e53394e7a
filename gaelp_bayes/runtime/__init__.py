"""Runtime pacer for the orchestrator's hot path: numpy and the standard library only.

    from gaelp_bayes.runtime import Pacer
    pacer = Pacer.load("models/demo", daily_budget=100.0, campaign="campaign_01")
    bid = pacer.adjust_bid(raw_bid)          # 0.0 means: do not bid
    pacer.record(cost, clicks=1, conversions=0)

How a bid is shaped (Balseiro & Gur's adaptive pacing, driven by the posterior):

- value: ``raw_bid * r[h]``, where ``r[h]`` is the hour's posterior mean conversion
  rate (today's day of week, re-weighted by today's outcomes) relative to the
  plan's spend-weighted average: bids are proportional to the opportunity's value.
- budget multiplier ``m`` (the dual variable), ``M_MIN <= m <= M_MAX`` (``RESOLVE_MAX``
  for the re-solving controller), by the plan option ``controller``:
  ``"resolve"`` (default): every ``RESOLVE_EVERY`` (60 s) the multiplier under
  which the rest of the day is expected to spend exactly the budget not yet
  spent (each hour at most its cap), on today's posterior means and the market
  as learned; the plan's curve is then re-drawn through the spend so far and
  that multiplier's expected spend (``_resolve``), so a day richer or poorer
  than expected spreads the difference over what is left of it;
  ``"pi"``: ``m = exp(L - KP * gap)``, ``gap`` being actual spend minus the
  plan's expected cumulative spend at this instant (in units of an average
  hour's budget) and ``L`` its integral over time, so the multiplier settles
  wherever spend tracks the morning's curve;
  ``"dual-gradient"``: Balseiro & Gur's update on the same gap (``_multiplier``).
  The controller steps on every record and, between records, at most every
  ``CONTROL_STEP`` (0.1 s) of bids: at thousands of bids a second it does not
  redo the same sum for each.
- caps: a single bid <= 10% of the current hour's allocation; spend through
  the end of this hour <= the curve's cumulative amount by then, plus 25% of
  the hour's allocation (no running ahead, unspent money carries forward;
  each hour at most ``max_share`` of the day, default 0.5); and the hard guard: a bid never
  exceeds budget left minus the bids still outstanding.  A placed bid is
  outstanding until its outcome is recorded (``bid_id`` settles a given bid)
  or ``auction_timeout`` seconds pass (plan option, default ``AUCTION_TIMEOUT``
  = 0.5 s): a lost bid may be recorded with cost 0, or not at all (exchanges
  without loss notices).  An expired bid stops holding the plan's room but
  holds the budget itself until ``MAX_AUCTION_TIMEOUT`` (120 s) has passed, so
  the day cannot overspend as long as every won bid is recorded within 120 s;
  a win recorded after its bid's auction timeout doubles the timeout
  (``status()["late_wins"]``).

Every number is checked once, where it enters (``adjust_bid`` and ``record``,
the cache's arrays, the journal's lines): a bid that is not a finite number
> 0, or a time that is not a plausible instant (``EARLIEST``..``LATEST``),
places nothing (0.0); a record with such a value is a ``ValueError`` and
changes nothing; a cache or journal with one gives a stopped pacer that says
why.  Outcomes may arrive in any order: a record releases the smallest
outstanding bid that can have cost what it reports, so the bids still held
always cover the ones still in flight.  A record dated before the last one
(or before today) is booked at the ledger's current time: spend is never lost
for its timestamp.  Days roll forward only: a clock that goes back stays on
today's ledger.

The plan's auction response (``market.py``) uses the market as learned from the pacer's own auctions
(``MarketBelief``: a won bid's price, a lost or expired bid's bound), starting from the plan options
``sigma`` and ``win_rate`` as priors; ``status()["market"]`` shows it, the journal carries it.

``record`` learns from today's clicks and conversions without a refit, in two
steps: it re-weights the cached draws by their likelihood (importance weights:
which of the fitted worlds is today), and on top of the re-weighted posterior
it learns today's own deviation: hour by hour, today's rate is the posterior's
times ``exp(x[h])``, with ``x`` smooth over the day (Gaussian AR(1) prior, sd
``TODAY_SD``, neighbour correlation ``TODAY_CORR``; Poisson likelihood; Laplace
posterior by Newton's method), so a few hours of low conversions lower the
hours that follow too, which the draws alone cannot express.  It re-plans the
rest of the day on hour changes when that evidence changes the plan
materially, flags a refit when the weights' effective sample size collapses,
and stops bidding only in an emergency (spend far beyond the curve paced on; an invalid,
failed or stale cache; a journal it cannot read or write);
``status()["emergency_stop"]`` says why.  A tracking outage (no conversion
reported for so long that even a quarter of the usual rate makes the silence
improbable) is an alert, not a stop: ``status()["tracking_outage_since"]`` and
``flags``; pacing goes on on the posterior, and the clicks whose conversions
went unreported are left out of learning until reports return.  A conversion
reported after its click (``record_conversion``) is credited to the click's hour;
with plan option ``conversion_delay`` (a sample of delays) each hour's evidence is
weighed by the share of its conversions that can have arrived by now, in learning
and in the outage alert alike.  Every record
is appended to a journal (one file per campaign and day, ``journal_file_name``)
with the controller's state after it, and replayed on restart (spend, learning
and the controller as they were); the journal is committed to disk in groups,
every ``FLUSH_EVERY`` (50 ms), or on every record with ``durable=True``, so a
crash loses at most the last 50 ms of records; a journal that cannot be read
completely stops the pacer rather than forget spend (only a torn last line, a
crash in mid-write, is dropped).

A fleet (``ledger=URL``, see ``ledger.py``): every process pacing the campaign shares one campaign-day in
a store.  The budget room of the hard guard is then this process's *lease* (``_ceiling``: the fleet's spend
at the last sync plus the lease), and ``_sync`` reports spend, outcomes, market and journal lines and takes
a new lease every ``SYNC_EVERY`` seconds or when the lease is short: the store is touched per lease, not
per bid.  ``_spent``, the clicks and conversions are the fleet's, so the plan, the controller and learning
follow the whole fleet's day.
"""

from __future__ import annotations

from .account import AccountPacer
from .checks import check_count, check_instant
from .controllers import CONTROLLERS, RESOLVE_EVERY
from .journal import journal_file_name
from .options import (AUCTION_TIMEOUT, CHECK_EVERY, FLUSH_EVERY, MAX_AUCTION_TIMEOUT, MAX_STORE_RETRY, PACER_MAX_SHARE,
                      PLAN_OPTIONS, SYNC_EVERY, check_plan_options)
from .pacer import Pacer
from .posterior import PACER_PARTS, CampaignPosterior, today_deviation

__all__ = ["AccountPacer", "AUCTION_TIMEOUT", "CHECK_EVERY", "CONTROLLERS", "FLUSH_EVERY", "MAX_AUCTION_TIMEOUT", "MAX_STORE_RETRY",
           "PACER_MAX_SHARE", "PACER_PARTS", "PLAN_OPTIONS", "RESOLVE_EVERY", "SYNC_EVERY", "CampaignPosterior", "Pacer",
           "check_count", "check_instant", "check_plan_options", "journal_file_name", "today_deviation"]
