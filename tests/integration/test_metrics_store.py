"""dispatcher/adapters/metrics.py against moto: the metrics table of CONTRACTS C1, written the way
the trainer writes it, read by the dispatcher with one BatchGetItem per 100 predictable jobs and
one index query per other job; items it must not trust are left out and reported."""

from __future__ import annotations

import collections
from decimal import Decimal

import pytest

from dispatcher.adapters.metrics import MetricsStore
from dispatcher.core.errors import ConfigError

TABLE = "sweepq-metrics"
SID = "bert-lr-abcdefgh"


def job(index: int, attempt: int = 1) -> str:
    return f"{SID}-{index}-a{attempt}"


@pytest.fixture
def ddb(aws):
    return aws.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def calls(ddb):
    """Operation name → number of calls made through the client."""
    counter: collections.Counter[str] = collections.Counter()
    ddb.meta.events.register("before-call.dynamodb", lambda model, **_: counter.update([model.name]))
    return counter


@pytest.fixture
def store(ddb, calls):
    store = MetricsStore(TABLE, ddb, sleep=lambda seconds: None)
    assert store.create_table() is True
    calls.clear()
    return store


def put(ddb, pod: str, job_name: str, *, attempt: int = 1, accuracy: float = 0.9, updated_at: int = 100,
        status: str = "running", **extra):
    """A PutItem as the trainer makes it (numbers as DynamoDB numbers, NaN as NULL)."""
    item = {
        "pod": {"S": pod}, "job": {"S": job_name}, "trial_id": {"S": job_name.rsplit("-a", 1)[0]},
        "attempt": {"N": str(attempt)}, "world_size": {"N": "2"},
        "metrics": {"M": {"eval/accuracy": {"N": str(Decimal(repr(accuracy)))}, "eval/loss": {"NULL": True}}},
        "history": {"M": {"0": {"M": {"eval/accuracy": {"N": "0.5"}}},
                          "1": {"M": {"eval/accuracy": {"N": str(Decimal(repr(accuracy)))}}}}},
        "status": {"S": status}, "updated_at": {"N": str(updated_at)},
    }
    item.update(extra)
    ddb.put_item(TableName=TABLE, Item=item)


def test_create_table_is_idempotent_and_has_the_contract_shape(ddb, store):
    assert store.create_table() is False
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pod", "KeyType": "HASH"}]
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_job" and index["Projection"] == {"ProjectionType": "ALL"}
    assert index["KeySchema"] == [{"AttributeName": "job", "KeyType": "HASH"}, {"AttributeName": "pod", "KeyType": "RANGE"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_a_table_of_that_name_with_another_key_is_a_config_error(ddb):
    ddb.create_table(TableName="sweepq", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    with pytest.raises(ConfigError, match="SWEEPQ_METRICS_TABLE: table 'sweepq' exists with key"):
        MetricsStore("sweepq", ddb).create_table()


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_predictable_kinds_are_read_with_one_batch_get_per_hundred_jobs(ddb, store, calls):
    # GIVEN 150 pytorchjob / elasticjob / local jobs, each with its first pod's item (and a second pod's)
    refs = []
    for i in range(150):
        kind, first = [("pytorchjob", "worker-0"), ("elasticjob", "worker-0"), ("local", "local-0")][i % 3]
        put(ddb, f"{job(i)}-{first}", job(i), accuracy=i / 1000)
        if kind != "local":
            put(ddb, f"{job(i)}-worker-1", job(i), accuracy=i / 1000)
        refs.append((kind, job(i), 1))
    calls.clear()
    # WHEN the dispatcher reads them
    read = store.read(refs)
    # THEN every job has its verified item, from two BatchGetItem calls and no query or scan
    assert len(read) == 150 and read.ignored == () and read.unread == ()
    assert dict(read.items())[job(7)] is read[job(7)]  # a real Mapping
    assert read[job(7)].metrics == {"eval/accuracy": 0.007, "eval/loss": None}
    assert read[job(7)].history == {0: {"eval/accuracy": 0.5}, 1: {"eval/accuracy": 0.007}}
    assert read[job(8)].pod == f"{job(8)}-local-0"
    assert dict(calls) == {"BatchGetItem": 2}


def test_other_kinds_are_read_from_the_index_one_query_per_job(ddb, store, calls):
    put(ddb, f"{job(1)}-node-0-0-x7k2p", job(1), updated_at=100, accuracy=0.1)
    put(ddb, f"{job(1)}-node-1-0-q2w3e", job(1), updated_at=105, accuracy=0.2)
    put(ddb, f"{job(2)}-0-a1b2c", job(2))
    calls.clear()
    read = store.read([("trainjob", job(1), 1), ("job", job(2), 1), ("trainjob", job(3), 1)])
    assert read[job(1)].pod == f"{job(1)}-node-1-0-q2w3e"  # the freshest of its pods
    assert read[job(2)].pod == f"{job(2)}-0-a1b2c"
    assert job(3) not in read and read.ignored == ()
    assert dict(calls) == {"Query": 3}


def test_items_a_job_must_not_trust_are_ignored_and_reported(ddb, store):
    # GIVEN a victim trainjob, and hostile or stale items that claim to be its metrics
    victim = job(1)
    put(ddb, f"{victim}-node-0-0-abcde", victim, accuracy=0.5)                      # its own pod: trusted
    put(ddb, f"{job(9)}-node-0-0-abcde", victim, accuracy=1.0, updated_at=999)      # another job's pod
    put(ddb, f"{victim}-node-0-0-zzzzz", victim, attempt=2, accuracy=1.0, updated_at=999)  # another attempt
    put(ddb, f"{victim}-node-1-1-yyyyy", victim, accuracy=1.0, updated_at=999,
        status="won")                                                                # a status that does not exist
    # WHEN the dispatcher reads the victim's metrics
    read = store.read([("trainjob", victim, 1)])
    # THEN only its own pod's item counts; each other one is reported with the reason
    assert read[victim].metrics["eval/accuracy"] == 0.5
    reasons = {i.pod: i.reason for i in read.ignored}
    # another job's pod claiming the victim's job is never even read: the index is queried for pods
    # named after the job only (rev17 F4: such items could otherwise bury the real one past the page cap)
    assert set(reasons) == {f"{victim}-node-0-0-zzzzz", f"{victim}-node-1-1-yyyyy"}
    assert "attempt 2, not 1" in reasons[f"{victim}-node-0-0-zzzzz"]
    assert "status: 'won'" in reasons[f"{victim}-node-1-1-yyyyy"]


def test_attributes_outside_the_contract_are_never_read(ddb, store, calls):
    # The trainer policy cannot write them (dynamodb:Attributes); were one there, the projection
    # of the contract's attributes leaves it out of every read.
    put(ddb, f"{job(1)}-worker-0", job(1), owner={"S": "me"}, expires_at={"N": "1"})
    put(ddb, f"{job(2)}-0-abcde", job(2), owner={"S": "me"})
    read = store.read([("pytorchjob", job(1), 1), ("job", job(2), 1)])
    assert sorted(read) == [job(1), job(2)] and read.ignored == ()


def test_a_predictable_item_of_another_job_or_attempt_is_not_trusted(ddb, store):
    # the first pod of job(1) claims to report for job(2) (whose first pod wrote nothing)
    put(ddb, f"{job(1)}-worker-0", job(2))
    put(ddb, f"{job(3, 2)}-worker-0", job(3, 2), attempt=1)
    read = store.read([("pytorchjob", job(1), 1), ("pytorchjob", job(2), 1), ("pytorchjob", job(3, 2), 2)])
    assert len(read) == 0
    assert sorted(i.reason.split(":")[0] for i in read.ignored) == ["attempt", "job"]


def test_template_jobs_are_trusted_only_with_the_operators_pattern(ddb, store):
    put(ddb, f"{job(1)}-workers-0-0-abcde", job(1))
    assert len(store.read([("template", job(1), 1)])) == 0
    read = store.read([("template", job(1), 1)], template_patterns={job(1): r"workers-0-[0-9]+-[a-z0-9]{5}"})
    assert read[job(1)].pod == f"{job(1)}-workers-0-0-abcde"


def test_unprocessed_keys_are_retried_then_reported_unread(ddb, store, calls):
    # GIVEN DynamoDB returns some keys unprocessed (throttling): first 2 rounds, then forever for one key
    for i in range(5):
        put(ddb, f"{job(i)}-worker-0", job(i))
    rounds = {"n": 0}

    def throttle(parsed, **_):
        rounds["n"] += 1
        responses = parsed["Responses"][TABLE]
        keep = [r for r in responses if rounds["n"] > 2 and r["pod"]["S"] != f"{job(4)}-worker-0"]
        parsed["UnprocessedKeys"] = {TABLE: {"Keys": [{"pod": r["pod"]} for r in responses if r not in keep]}}
        parsed["Responses"][TABLE] = keep

    ddb.meta.events.register("after-call.dynamodb.BatchGetItem", throttle)
    calls.clear()
    read = store.read([("pytorchjob", job(i), 1) for i in range(5)])
    assert sorted(read) == [job(i) for i in range(4)]
    assert read.unread == (job(4),)
    assert calls["BatchGetItem"] == 5  # MAX_BATCH_ROUNDS


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_reading_no_jobs_makes_no_call(store, calls):
    assert len(store.read([])) == 0 and dict(calls) == {}
