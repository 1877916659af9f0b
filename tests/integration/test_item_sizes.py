"""Bounded items: the META item of a sweep stays far below DynamoDB's 400 KB limit, whatever the caps.

Its parts are bounded at intake (``META_BUDGET``: name, source, submitter, launch settings with
their template ≤ 48 KiB) and by the tick (at most ``MAX_LIVE_PER_SWEEP`` live entries of at most
``MAX_LIVE_ENTRY_BYTES``, the best trial's params ≤ 4 KiB, reasons cut). The worst case of all of
them at once is written to moto, which enforces the 400 KB limit as DynamoDB does; so is the
unbounded map the issue found (4,600 live trials of one sweep stopped the dispatcher).
"""

from __future__ import annotations

import pytest

from dispatcher.adapters.dynamo import item_size, ser
from dispatcher.adapters.store import Store, sweep_key
from dispatcher.core.outcomes import FINGERPRINT_LEN, MAX_UNCOUNTED
from dispatcher.core.records import MAX_LIVE_ENTRY_BYTES, MAX_LIVE_PER_SWEEP, LiveTrial, TrialState
from dispatcher.intake import META_BUDGET
from dispatcher.tick import BEST_PARAMS_MAX

LIMIT = 400 * 1024


def worst_entry(index: int) -> dict:
    """The largest live entry the tick writes: a 10-digit index, attempt 21 + the most uncounted
    attempts, a 40-character job name, the claim with microseconds, then either a start time with
    microseconds (running) or a Kueue admission time (admitted, not started: never both), a failure
    fingerprint, the uncounted attempts and a 4-digit node count (its reason is never stored on it)."""
    common = dict(claimed_at=1_800_000_000.123456, reason="r" * 5000, uncounted=MAX_UNCOUNTED,
                  fingerprint="f" * FINGERPRINT_LEN, nodes=1000)
    running = LiveTrial(index, 21 + MAX_UNCOUNTED, TrialState.RUNNING, "a" * 40, started_at=1_800_000_000.654321,
                        **common).to_item()
    admitted = LiveTrial(index, 21 + MAX_UNCOUNTED, TrialState.LAUNCHED, "a" * 40, admitted_at=1_899_999_999.987654,
                         **common).to_item()
    return max(running, admitted, key=lambda entry: item_size({str(index): entry}))


def worst_meta(live: int) -> dict:
    meta = {**sweep_key("s" * 12 + "-abcdefgh"), "blob": "x" * (META_BUDGET - 64)}  # all intake allows
    meta["live"] = {str(9_000_000_000 + i): worst_entry(9_000_000_000 + i) for i in range(live)}
    meta["best"] = {"trial_index": 9_999_999_999, "trial_id": "t" * 40, "metric": "m" * 200, "value": 0.1234567890123,
                    "params": "p" * BEST_PARAMS_MAX}
    meta["held"] = {"reason": "h" * 500, "at": 1_800_000_000.123456, "failures": 99}
    meta.update(reason="r" * 1000, last_error="e" * 500, cancelled_by="c" * 256, failures=99)
    # what control messages and the policy leave on it (each cut where it is written)
    meta.update(policy_hold="p" * 4000, cancel_note="n" * 256,
                control_refused={"action": "resume", "by": "b" * 256, "reason": "r" * 512, "at": 1_800_000_000.1},
                paused=True, paused_by="b" * 256, pause_note="n" * 256, paused_at=1_800_000_000.1,
                resumed_by="b" * 256, resume_note="n" * 256, resumed_at=1_800_000_000.1, early_stopped=10**9)
    return meta


def test_one_live_entry_is_within_its_documented_bound():
    entry = {"9999999999": worst_entry(9_999_999_999)}
    assert item_size(entry) + 1 <= MAX_LIVE_ENTRY_BYTES, item_size(entry)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@pytest.mark.parametrize("live", [MAX_LIVE_PER_SWEEP, 10_000])
def test_the_meta_item_at_the_live_bound_fits_and_an_unbounded_map_would_not(aws, live, capsys):
    client = aws.client("dynamodb")
    Store("sizes", client).create_table()
    meta = worst_meta(live)
    size = item_size(meta)
    with capsys.disabled():
        print(f"\nMETA item, worst case, {live:,} live trials: {size / 1024:,.0f} KiB (limit 400 KB)")
    if live <= MAX_LIVE_PER_SWEEP:
        # THEN at the bound the whole worst case stays well below the limit (≥ 40 % of it to spare), and
        # DynamoDB takes it
        assert size < LIMIT * 0.6
        client.put_item(TableName="sizes", Item=ser(meta))
    else:
        # a map of 10,000 live trials is what the bound prevents: DynamoDB refuses such an item
        assert size > LIMIT
        with pytest.raises(client.exceptions.ClientError, match="Item size has exceeded"):
            client.put_item(TableName="sizes", Item=ser(meta))
