"""dispatcher/core/metrics.py: the pod-name grammar of every kind (and the proof that no other
job's pod can pass it), item verification, and the history helpers. Pure, no mocks."""

from __future__ import annotations

import itertools
import random

import pytest

from dispatcher.core.identity import job_name, parse_job_name
from dispatcher.core.metrics import (
    ATTRIBUTES,
    MAX_RECORDED,
    MAX_RECORDED_NAME,
    POD_SUFFIX,
    MetricsItem,
    UnverifiedItem,
    choose,
    final_values,
    history_rows,
    history_series,
    parse_item,
    pod_belongs_to,
    predictable_pod,
    reported_jobs,
    template_suffix,
    value_at,
    verify,
    with_reported,
)

J = "bert-lr-abcdefgh-3-a2"

GOOD = {
    "pytorchjob": [f"{J}-worker-0", f"{J}-worker-17", f"{J}-master-0"],
    "elasticjob": [f"{J}-worker-0", f"{J}-worker-3"],
    "trainjob": [f"{J}-node-0-0-x7k2p", f"{J}-node-0-11-abcde", f"{J}-node-2-0-00000"],
    "job": [f"{J}-x7k2p", f"{J}-0-x7k2p", f"{J}-12-abc12"],
    "local": [f"{J}-local-0", f"{J}-local-1"],
}
BAD = {
    "pytorchjob": [f"{J}-worker-01", f"{J}-Worker-0", f"{J}-launcher-0", f"{J}-worker-0-x", f"{J}-worker-",
                   f"{J}-worker-0\n", f"{J}-worker-\u0663", f"x{J}-worker-0", J, f"{J}-worker-0 "],
    "elasticjob": [f"{J}-master-0", f"{J}-worker-00", f"{J}-worker-1a"],
    "trainjob": [f"{J}-node-0-0-abcd", f"{J}-node-0-0-abcdef", f"{J}-node-0-0-ABCDE", f"{J}-node-0-abcde",
                 f"{J}-node-00-0-abcde", f"{J}-node-0-0-ab_de"],
    "job": [f"{J}-abcd", f"{J}-abcdef", f"{J}-01-abcde", f"{J}--abcde", f"{J}-0-abcd"],
    "local": [f"{J}-local-01", f"{J}-local", f"{J}-local-0-0"],
}


@pytest.mark.parametrize(("kind", "pod"), [(k, p) for k, pods in GOOD.items() for p in pods])
def test_pod_names_of_each_kind_belong_to_their_job(kind, pod):
    assert pod_belongs_to(kind, J, pod)


@pytest.mark.parametrize(("kind", "pod"), [(k, p) for k, pods in BAD.items() for p in pods])
def test_near_misses_do_not_belong(kind, pod):
    assert not pod_belongs_to(kind, J, pod)


def test_template_pods_are_never_trusted_without_an_operator_pattern():
    assert not pod_belongs_to("template", J, f"{J}-worker-0")
    assert pod_belongs_to("template", J, f"{J}-workers-0-1-abcde", template_pattern=r"workers-0-[0-9]+-[a-z0-9]{5}")
    assert not pod_belongs_to("template", J, f"{J}-workers-0-1", template_pattern=r"workers-0-[0-9]+-[a-z0-9]{5}")


@pytest.mark.parametrize("job", ["not-a-job", "BERT-abcdefgh-1-a1", "bert-abcdefgh-1", "", "bert-abcdefgh-1-a1-"])
def test_a_job_name_sweepq_did_not_make_matches_nothing(job):
    for kind in POD_SUFFIX:
        assert not pod_belongs_to(kind, job, f"{job}-worker-0")
        assert not pod_belongs_to(kind, job, f"{job}-local-0")


def test_unknown_kind_and_non_strings_match_nothing():
    assert not pod_belongs_to("mpijob", J, f"{J}-worker-0")
    assert not pod_belongs_to("pytorchjob", J, None)  # type: ignore[arg-type]
    assert not pod_belongs_to("pytorchjob", None, f"{J}-worker-0")  # type: ignore[arg-type]


def test_predictable_pods():
    assert predictable_pod("pytorchjob", J) == f"{J}-worker-0"
    assert predictable_pod("elasticjob", J) == f"{J}-worker-0"
    assert predictable_pod("local", J) == f"{J}-local-0"
    assert predictable_pod("trainjob", J) is None and predictable_pod("job", J) is None
    for kind in ("pytorchjob", "elasticjob", "local"):
        assert pod_belongs_to(kind, J, predictable_pod(kind, J))


# ---------------------------------------------------------------- no other job's pod can match

_RANDOM_SUFFIXES = ["abcde", "a1234", "a1xyz", "00000", "zzzzz", "a2b3c"]


def _pods_of(kind: str, job: str) -> list[str]:
    """Every shape of pod name the kind's controller can give, with adversarial random parts
    (suffixes that start with ``a`` and digits, like an attempt segment)."""
    if kind == "pytorchjob":
        return [f"{job}-{role}-{n}" for role in ("worker", "master") for n in (0, 1, 12)]
    if kind == "elasticjob":
        return [f"{job}-worker-{n}" for n in (0, 1, 12)]
    if kind == "trainjob":
        return [f"{job}-node-{i}-{j}-{r}" for i in (0, 1) for j in (0, 3) for r in _RANDOM_SUFFIXES]
    if kind == "job":
        return [f"{job}-{r}" for r in _RANDOM_SUFFIXES] + [f"{job}-{n}-{r}" for n in (0, 1, 7) for r in _RANDOM_SUFFIXES]
    if kind == "local":
        return [f"{job}-local-{n}" for n in (0, 1, 12)]
    raise AssertionError(kind)


def _adversarial_jobs() -> list[str]:
    """Valid job names chosen to be prefixes of each other and of pod names: the longest slug
    (12 characters) absorbing another job's name, an attempt segment that is also a valid
    8-character hash (``a2345672``), slugs spelling the grammar's words."""
    jobs = {
        "x-abcdefgh-1-a2345672",  # its last segment is a valid hash, so ...
        "x-abcdefgh-1-a2345672-0-a1",  # ... this one is it plus "-0-a1" (slug "x-abcdefgh-1")
        "x-abcdefgh-1-a2345672-0-a2",
        "x-abcdefgh-1-a2345672-12-a1",
        "worker-abcdefgh-0-a1", "worker-0-abcdefgh-0-a1", "node-0-0-abcdefgh-1-a1", "local-0-abcdefgh-0-a1",
        "a-abcdefgh-0-a1", "a-abcdefgh-0-a10", "a-abcdefgh-00-a1",
    }
    rng = random.Random(20261203)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    while len(jobs) < 200:
        slug = rng.choice("abcwx") + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 11)))
        slug = slug.rstrip("-")
        if "--" in slug:
            continue
        tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(8))
        jobs.add(job_name(f"{slug}-{tail}", rng.randint(0, 999), rng.randint(1, 12)))
    valid = sorted(j for j in jobs if parse_job_name(j) is not None)
    assert len(valid) >= 195 and "x-abcdefgh-1-a2345672-0-a1" in valid
    return valid


def test_the_adversarial_set_really_has_jobs_that_prefix_other_jobs():
    jobs = _adversarial_jobs()
    prefixed = [(a, b) for a, b in itertools.permutations(jobs, 2) if b.startswith(a + "-")]
    assert ("x-abcdefgh-1-a2345672", "x-abcdefgh-1-a2345672-0-a1") in prefixed


def test_no_pod_of_one_job_belongs_to_another_job_of_any_kind():
    # GIVEN valid job names that prefix each other, and every pod shape of every kind for each
    jobs = _adversarial_jobs()
    kinds = list(POD_SUFFIX)
    pods = {(kind, job): _pods_of(kind, job) for kind in kinds for job in jobs}
    # WHEN each pod is checked against every (kind, job) whose names it starts with
    for (kind, job), names in pods.items():
        for pod in names:
            assert pod_belongs_to(kind, job, pod), (kind, job, pod)
            owners = [(k, j) for j in jobs if pod.startswith(j + "-") for k in kinds if pod_belongs_to(k, j, pod)]
            # THEN it belongs to its own job only (possibly under another kind's grammar too:
            # the reader checks the kind recorded for the job, never a kind the item names)
            assert {j for _, j in owners} == {job}, (kind, job, pod, owners)


# ---------------------------------------------------------------- items


def _raw(**overrides):
    raw = {
        "pod": f"{J}-worker-0", "job": J, "trial_id": "bert-lr-abcdefgh-3", "attempt": 2, "world_size": 8,
        "metrics": {"eval/accuracy": 0.91, "eval/loss": 0.3}, "status": "running", "updated_at": 1767225600,
        "history": {"0": {"eval/accuracy": 0.8}, "1": {"eval/accuracy": 0.9, "eval/loss": None}},
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not ...}


def test_a_good_item_verifies():
    item = verify(_raw(final={"eval/accuracy": 0.93}), kind="pytorchjob", job=J, attempt=2)
    assert item.metrics == {"eval/accuracy": 0.91, "eval/loss": 0.3}
    assert item.history == {0: {"eval/accuracy": 0.8}, 1: {"eval/accuracy": 0.9, "eval/loss": None}}
    assert item.final == {"eval/accuracy": 0.93} and not item.terminal and item.world_size == 8
    assert set(_raw()) <= set(ATTRIBUTES)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"job": "other-abcdefgh-1-a1"}, "job: the item names job"),
        ({"attempt": 1}, "attempt: the item is of attempt 1, not 2"),
        ({"trial_id": "bert-lr-abcdefgh-4"}, "trial_id: the item names trial 'bert-lr-abcdefgh-4', not 'bert-lr-abcdefgh-3'"),
        ({"trial_id": ...}, "trial_id: the item names no trial, not 'bert-lr-abcdefgh-3'"),
        ({"trial_id": ""}, "trial_id: the item names trial '', not"),
        ({"pod": "other-abcdefgh-1-a1-worker-0"}, "is not a pod name of pytorchjob job"),
        ({"pod": f"{J}-node-0-0-abcde"}, "is not a pod name of pytorchjob job"),
        ({"owner": "x"}, "['owner'] are not metrics attributes"),
        ({"expires_at": 1}, "['expires_at'] are not metrics attributes"),
        ({"status": "done"}, "status: 'done' is not one of"),
        ({"status": ...}, "['status'] are missing"),
        ({"attempt": True}, "attempt: 'True' is not an integer"),
        ({"attempt": 0}, "attempt: '0' is not an integer ≥ 1"),
        ({"world_size": 1.5}, "world_size: '1.5' is not an integer"),
        ({"metrics": {"eval/accuracy": "0.9"}}, "metrics.eval/accuracy: a str, not a number"),
        ({"metrics": {"eval/accuracy": True}}, "a bool, not a number"),
        ({"metrics": [1]}, "metrics: a list, not a map"),
        ({"metrics": {f"m{i}": 1 for i in range(300)}}, "300 metrics, more than 256"),
        ({"history": {"01": {}}}, "position '01' is not a decimal index"),
        ({"history": {"-1": {}}}, "position '-1' is not a decimal index"),
        ({"history": {"0": 5}}, "history.0: a int, not a map"),
        ({"pod": 7}, "pod: a int, not a string"),
        ({"updated_at": float("inf")}, "updated_at and attempt must be numbers"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_untrusted_items_are_refused_with_the_reason(overrides, reason):
    with pytest.raises(UnverifiedItem) as caught:
        verify(_raw(**overrides), kind="pytorchjob", job=J, attempt=2)
    assert reason in str(caught.value)


def test_non_finite_values_read_as_none_and_the_reason_never_dumps_values():
    item = parse_item(_raw(metrics={"eval/loss": float("nan"), "x": float("inf")}))
    assert item.metrics == {"eval/loss": None, "x": None}
    with pytest.raises(UnverifiedItem) as caught:
        parse_item(_raw(status="s" * 10_000))
    assert len(str(caught.value)) < 200


def test_choose_takes_the_freshest_item_then_the_smallest_pod():
    a = MetricsItem(pod=f"{J}-worker-1", job=J, attempt=2, status="running", updated_at=10)
    b = MetricsItem(pod=f"{J}-worker-0", job=J, attempt=2, status="running", updated_at=10)
    c = MetricsItem(pod=f"{J}-worker-2", job=J, attempt=2, status="finished", updated_at=11)
    assert choose([a, b]) is b and choose([a, b, c]) is c and choose([]) is None


def test_history_helpers_keep_positions_across_gaps():
    item = parse_item(_raw(history={"0": {"acc": 0.5}, "2": {"acc": 0.7, "loss": float("nan")}}))
    assert history_series(item, "acc") == [0.5, None, 0.7]
    assert history_series(item, "loss") == [None, None, None]
    assert value_at(item, "acc", 2) == 0.7 and value_at(item, "acc", 1) is None and value_at(item, "acc", 9) is None
    assert history_rows(item) == [{"acc": 0.5}, {}, {"acc": 0.7}]
    empty = parse_item(_raw(history=...))
    assert history_series(empty, "acc") == [] and history_rows(empty) == []


# ---------------------------------------------------------------- final metrics, views


def test_final_values_take_final_then_metrics_of_a_finished_item_only():
    item = parse_item(_raw(status="finished", final={"eval/loss": 0.2, "eval/accuracy": 0.93, "epoch": 3}))
    final = final_values(item, metric="eval/accuracy")
    assert final.values == {"eval/accuracy": 0.93, "epoch": 3, "eval/loss": 0.2} and final.notes == ()
    assert list(final.values)[0] == "eval/accuracy"  # the sweep's metric first, then by name
    assert final_values(parse_item(_raw(status="finished")), metric="x").values == {"eval/accuracy": 0.91,
                                                                                    "eval/loss": 0.3}
    for status in ("running", "stopped", "preempted", "failed"):
        refused = final_values(parse_item(_raw(status=status, final={"eval/accuracy": 0.99})))
        assert refused.values == {} and refused.notes == (f"status: {status!r}, not 'finished' — the trial wrote "
                                                          "no final metrics",)


def test_final_values_leave_out_what_the_trial_item_must_not_get_each_with_a_note():
    final = {"eval/accuracy": float("nan"), "x" * (MAX_RECORDED_NAME + 1): 1.0,
             **{f"m{i:03d}": i for i in range(MAX_RECORDED + 5)}}
    out = final_values(parse_item(_raw(status="finished", final=final)), metric="eval/accuracy")
    assert len(out.values) == MAX_RECORDED and "eval/accuracy" not in out.values
    assert list(out.values) == [f"m{i:03d}" for i in range(MAX_RECORDED)]
    assert out.notes[0] == "final.eval/accuracy: not a finite number"
    assert out.notes[1] == f"final: 6 names beyond the first {MAX_RECORDED} left out"
    assert all(len(note) < 200 for note in out.notes)


@pytest.mark.parametrize(("pattern", "suffix"), [
    ("{job}-worker-[0-9]+", "worker-[0-9]+"),
    ("{job}-launcher", "launcher"),
    (None, None), ("", None), ("{job}", None), ("{job}-", None), ("x-{job}-worker-0", None),
    ("{job}-{job}-0", None), ("{job}-(", None), ("{job}worker-0", None),
])
def test_template_suffix_takes_only_job_dash_regex(pattern, suffix):
    assert template_suffix(pattern) == suffix


def test_views_show_unfinished_trials_latest_report_of_their_own_attempt_only():
    trials = [
        {"index": 3, "state": "RUNNING", "attempt": 2, "job": J},
        {"index": 4, "state": "SUCCEEDED", "attempt": 1, "job": "bert-lr-abcdefgh-4-a1", "metrics": {"acc": 0.5}},
        {"index": 5, "state": "FAILED", "attempt": 1, "job": "bert-lr-abcdefgh-5-a1"},
        {"index": 6, "state": "RUNNING", "attempt": 1, "job": "bert-lr-abcdefgh-7-a1"},  # not its own job
        {"index": 7, "state": "WAITING", "attempt": 1},
    ]
    assert reported_jobs(trials, kind="pytorchjob") == [("pytorchjob", J, 2),
                                                        ("pytorchjob", "bert-lr-abcdefgh-5-a1", 1)]
    running = parse_item(_raw(metrics={"acc": 0.7, "loss": float("nan")}))
    stale = parse_item(_raw(job="bert-lr-abcdefgh-5-a1", attempt=2))
    shown = with_reported(trials, {J: running, "bert-lr-abcdefgh-4-a1": running, "bert-lr-abcdefgh-5-a1": stale})
    assert shown[0]["metrics"] == {"acc": 0.7}  # NaN left out
    assert shown[1]["metrics"] == {"acc": 0.5}  # a succeeded trial keeps what the dispatcher recorded
    assert "metrics" not in shown[2]  # another attempt's item
    assert shown[3:] == trials[3:]
