"""The harness's DynamoDB conflicts against boto3, the real SDK, with the harness served in-process.

Run from the repository root: python3 -m pytest tests/harness -q

DynamoDB cancels concurrent requests on one item rather than queueing them: a transaction
meeting an item another request holds gets TransactionCanceledException (reason
TransactionConflict, in request order), a single-item write on an item a transaction holds gets
TransactionConflictException, and a transaction repeated with the token of one still running
gets TransactionInProgressException. Conditional writes stay atomic; transactions on different
items never meet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_moto  # noqa: E402
from ferry_moto import control  # noqa: E402
from moto.dynamodb import models as moto_models  # noqa: E402

TABLE = "ledger"


@pytest.fixture
def ddb(endpoint):
    """A fresh emulator (defaults restored by the reset endpoint) with the ledger table; a client
    that never retries, so every error the harness answers shows."""
    assert control(endpoint, "POST", "/_ferry/reset")[0] == 200
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=ferry_moto.DEFAULT_REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10))
    client.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    return client


def conflicts(ddb, **settings) -> dict:
    if settings:
        status, answer = control(ddb.meta.endpoint_url, "POST", "/_ferry/dynamodb/conflicts", settings)
        assert status == 200, answer
    return control(ddb.meta.endpoint_url, "GET", "/_ferry/dynamodb/conflicts")[1]


def key(pk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": "R"}}


def update(pk: str, value: str, attribute: str = "v") -> dict:
    return {"Update": {"TableName": TABLE, "Key": key(pk), "UpdateExpression": "SET #a = :v",
                       "ExpressionAttributeNames": {"#a": attribute},
                       "ExpressionAttributeValues": {":v": {"S": value}}}}


def value(ddb, pk: str, attribute: str = "v") -> str | None:
    item = ddb.get_item(TableName=TABLE, Key=key(pk), ConsistentRead=True).get("Item")
    return item[attribute]["S"] if item and attribute in item else None


def code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def reasons(err: ClientError) -> list[str]:
    return [r["Code"] for r in err.response["CancellationReasons"]]


class Background(threading.Thread):
    """Runs `fn` on a thread of its own; join() returns its result or raises its error."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as err:  # noqa: BLE001  handed to the test by join()
            self.error = err

    def join(self, timeout: float | None = 10):
        super().join(timeout)
        assert not self.is_alive(), "still running"
        if self.error:
            raise self.error
        return self.result


def wait_until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def held(n: int) -> None:
    """Until transactions hold `n` items."""
    wait_until(lambda: len(ferry_moto.HELD) >= n)


def test_of_two_overlapping_transactions_on_one_item_one_applies_and_the_other_is_cancelled_at_once(ddb) -> None:
    conflicts(ddb, window=1.0)
    first = Background(lambda: ddb.transact_write_items(TransactItems=[update("a", "1"), update("x", "1")]))
    held(2)
    started = time.monotonic()
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(TransactItems=[update("b", "2"), update("x", "2"), update("c", "2")])
    assert time.monotonic() - started < 0.5, "cancelled at once, not queued behind the first"
    assert code(cancelled.value) == "TransactionCanceledException"
    assert reasons(cancelled.value) == ["None", "TransactionConflict", "None"]
    conflict = cancelled.value.response["CancellationReasons"][1]
    assert conflict["Message"] == "Transaction is ongoing for the item"
    assert "[None, TransactionConflict, None]" in cancelled.value.response["Error"]["Message"]
    first.join()
    assert [value(ddb, pk) for pk in ("a", "x", "b", "c")] == ["1", "1", None, None]
    assert conflicts(ddb)["met"] == {"transactions": 1, "writes": 0}


def test_a_single_write_on_an_item_a_transaction_holds_is_refused_and_changes_nothing(ddb) -> None:
    ddb.put_item(TableName=TABLE, Item={**key("x"), "v": {"S": "0"}})
    conflicts(ddb, window=1.0)
    transaction = Background(lambda: ddb.transact_write_items(TransactItems=[update("x", "1")]))
    held(1)
    refused = []
    for write in (lambda: ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET v = :v",
                                          ExpressionAttributeValues={":v": {"S": "write"}}),
                  lambda: ddb.put_item(TableName=TABLE, Item={**key("x"), "v": {"S": "write"}}),
                  lambda: ddb.delete_item(TableName=TABLE, Key=key("x"))):
        with pytest.raises(ClientError) as err:
            write()
        refused.append((code(err.value), err.value.response["Error"]["Message"]))
    assert refused == [("TransactionConflictException", "Transaction is ongoing for the item")] * 3
    assert value(ddb, "x") == "0", "a refused write changed the item"
    ddb.put_item(TableName=TABLE, Item={**key("y"), "v": {"S": "write"}})  # another item: no conflict
    transaction.join()
    assert (value(ddb, "x"), value(ddb, "y")) == ("1", "write")
    assert conflicts(ddb)["met"] == {"transactions": 0, "writes": 3}


def test_a_transaction_meeting_a_single_write_being_applied_is_cancelled(ddb) -> None:
    # The test holds moto's lock: the write has marked its item and waits to be applied.
    with ferry_moto._MOTO_LOCK:
        write = Background(lambda: ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET v = :v",
                                                   ExpressionAttributeValues={":v": {"S": "write"}}))
        wait_until(lambda: len(ferry_moto.WRITING) == 1)
        with pytest.raises(ClientError) as cancelled:
            ddb.transact_write_items(TransactItems=[update("a", "1"), update("x", "1")])
    write.join()
    assert code(cancelled.value) == "TransactionCanceledException"
    assert reasons(cancelled.value) == ["None", "TransactionConflict"]
    assert (value(ddb, "a"), value(ddb, "x")) == (None, "write")
    assert conflicts(ddb)["met"] == {"transactions": 1, "writes": 0}


def test_rate_one_cancels_every_transaction_and_refuses_every_single_write(ddb) -> None:
    ddb.put_item(TableName=TABLE, Item={**key("w"), "v": {"S": "0"}})
    conflicts(ddb, window=0, rate=1)
    for i in range(5):
        with pytest.raises(ClientError) as cancelled:
            ddb.transact_write_items(TransactItems=[update(f"t{i}", "1"), update(f"u{i}", "1")])
        assert code(cancelled.value) == "TransactionCanceledException"
        assert sorted(reasons(cancelled.value)) == ["None", "TransactionConflict"]
    for write in (lambda: ddb.put_item(TableName=TABLE, Item={**key("w"), "v": {"S": "1"}}),
                  lambda: ddb.put_item(TableName=TABLE, Item={**key("new"), "v": {"S": "1"}}),
                  lambda: ddb.update_item(TableName=TABLE, Key=key("w"), UpdateExpression="SET v = :v",
                                          ExpressionAttributeValues={":v": {"S": "1"}}),
                  lambda: ddb.delete_item(TableName=TABLE, Key=key("w"))):
        with pytest.raises(ClientError) as refused:
            write()
        assert code(refused.value) == "TransactionConflictException"
    assert ddb.scan(TableName=TABLE)["Items"] == [{**key("w"), "v": {"S": "0"}}], "nothing applied"
    assert conflicts(ddb)["met"] == {"transactions": 5, "writes": 4}


def test_rate_zero_and_window_zero_meet_no_conflict(ddb) -> None:
    conflicts(ddb, window=0, rate=0)
    for i in range(20):
        ddb.transact_write_items(TransactItems=[update("x", str(i)), update("y", str(i))])
        ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET w = :v",
                        ExpressionAttributeValues={":v": {"S": str(i)}})
        ddb.put_item(TableName=TABLE, Item={**key("z"), "v": {"S": str(i)}})
    assert [value(ddb, pk) for pk in ("x", "y", "z")] == ["19", "19", "19"]
    assert conflicts(ddb)["met"] == {"transactions": 0, "writes": 0}


def test_transactions_on_different_items_never_conflict_and_run_side_by_side(ddb) -> None:
    window, n = 0.5, 8
    conflicts(ddb, window=window)
    started = time.monotonic()
    runs = [Background(lambda i=i: ddb.transact_write_items(TransactItems=[update(f"a{i}", "1"), update(f"b{i}", "1")]))
            for i in range(n)]
    for run in runs:
        run.join()
    # Queued one behind another they would take n * window.
    assert time.monotonic() - started < n * window / 2
    assert all(value(ddb, f"{p}{i}") == "1" for p in "ab" for i in range(n))
    assert conflicts(ddb)["met"] == {"transactions": 0, "writes": 0}


def test_conditional_writes_stay_atomic_one_winner_per_value(ddb, monkeypatch) -> None:
    """Threads increment one counter if it still holds what they read, half of them by
    UpdateItem, half by a transaction; each value is won exactly once."""

    class SlowUpdate(moto_models.UpdateExpressionExecutor):
        def execute(self, *args, **kwargs):
            time.sleep(0.002)  # between moto's condition check and its write: races show
            return super().execute(*args, **kwargs)

    monkeypatch.setattr(moto_models, "UpdateExpressionExecutor", SlowUpdate)
    ddb.put_item(TableName=TABLE, Item={**key("n"), "n": {"N": "0"}})
    target, wins, outcomes = 60, [], Counter()

    def increment(seen: int, transactional: bool) -> None:
        condition = {"ConditionExpression": "n = :seen", "UpdateExpression": "SET n = :next",
                     "ExpressionAttributeValues": {":seen": {"N": str(seen)}, ":next": {"N": str(seen + 1)}}}
        if transactional:
            ddb.transact_write_items(TransactItems=[{"Update": {"TableName": TABLE, "Key": key("n"), **condition}}])
        else:
            ddb.update_item(TableName=TABLE, Key=key("n"), **condition)

    def worker(transactional: bool) -> None:
        while True:
            seen = int(ddb.get_item(TableName=TABLE, Key=key("n"), ConsistentRead=True)["Item"]["n"]["N"])
            if seen >= target:
                return
            try:
                increment(seen, transactional)
                wins.append(seen + 1)
                outcomes["won"] += 1
            except ClientError as err:
                lost = reasons(err)[0] if code(err) == "TransactionCanceledException" else code(err)
                assert lost in ("ConditionalCheckFailed", "ConditionalCheckFailedException", "TransactionConflict",
                                "TransactionConflictException"), err
                outcomes[lost] += 1

    workers = [Background(lambda t=i % 2 == 0: worker(t)) for i in range(8)]
    for w in workers:
        w.join(60)
    assert sorted(wins) == list(range(1, target + 1)), "a value won twice or never"
    assert int(ddb.get_item(TableName=TABLE, Key=key("n"))["Item"]["n"]["N"]) == target
    assert sum(v for k, v in outcomes.items() if k != "won") > 0, f"no contention: {outcomes}"


def test_a_token_still_in_progress_answers_in_progress_and_afterwards_the_first_answer(ddb) -> None:
    conflicts(ddb, window=1.0)
    add = {"TransactItems": [{"Update": {"TableName": TABLE, "Key": key("n"), "UpdateExpression": "ADD n :one",
                                         "ExpressionAttributeValues": {":one": {"N": "1"}}}}],
           "ClientRequestToken": "token-1"}
    first = Background(lambda: ddb.transact_write_items(**add))
    held(1)
    with pytest.raises(ClientError) as in_progress:
        ddb.transact_write_items(**add)
    assert code(in_progress.value) == "TransactionInProgressException"
    assert in_progress.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    first.join()
    assert ddb.transact_write_items(**add)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert ddb.get_item(TableName=TABLE, Key=key("n"))["Item"]["n"] == {"N": "1"}, "applied once"
    with pytest.raises(ClientError) as mismatch:
        ddb.transact_write_items(TransactItems=[update("x", "1")], ClientRequestToken="token-1")
    assert code(mismatch.value) == "IdempotentParameterMismatchException"
    # A conflict with a token in progress is not a conflict between transactions.
    assert conflicts(ddb)["met"] == {"transactions": 0, "writes": 0}


def test_a_cancelled_transaction_is_not_remembered_by_its_token(ddb) -> None:
    add = {"TransactItems": [{"Update": {"TableName": TABLE, "Key": key("n"), "UpdateExpression": "ADD n :one",
                                         "ExpressionAttributeValues": {":one": {"N": "1"}}}}],
           "ClientRequestToken": "token-2"}
    conflicts(ddb, rate=1)
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(**add)
    assert reasons(cancelled.value) == ["TransactionConflict"]
    conflicts(ddb, rate=0)
    ddb.transact_write_items(**add)
    ddb.transact_write_items(**add)
    assert ddb.get_item(TableName=TABLE, Key=key("n"))["Item"]["n"] == {"N": "1"}


def test_the_state_log_holds_applied_writes_only(ddb) -> None:
    ferry_moto.LOG_STATES.set()
    try:
        conflicts(ddb, window=0)
        ddb.transact_write_items(TransactItems=[update("x", "A", "state")])
        ddb.put_item(TableName=TABLE, Item={**key("y"), "v": {"S": "0"}})
        # Cancelled by a condition on another item: nothing of it applies.
        with pytest.raises(ClientError):
            ddb.transact_write_items(TransactItems=[update("x", "B", "state"), {"ConditionCheck": {
                "TableName": TABLE, "Key": key("y"), "ConditionExpression": "v = :v",
                "ExpressionAttributeValues": {":v": {"S": "1"}}}}])
        conflicts(ddb, rate=1)
        with pytest.raises(ClientError):
            ddb.transact_write_items(TransactItems=[update("x", "C", "state")])
        with pytest.raises(ClientError):
            ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET #s = :v",
                            ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":v": {"S": "D"}})
        conflicts(ddb, rate=0)
        with pytest.raises(ClientError):
            ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET #s = :v",
                            ConditionExpression="#s = :b", ExpressionAttributeNames={"#s": "state"},
                            ExpressionAttributeValues={":v": {"S": "E"}, ":b": {"S": "B"}})
        ddb.update_item(TableName=TABLE, Key=key("x"), UpdateExpression="SET #s = :v",
                        ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":v": {"S": "F"}})
        ddb.put_item(TableName=TABLE, Item={**key("x"), "state": {"S": "G"}})
    finally:
        ferry_moto.LOG_STATES.clear()
    assert ferry_moto.STATE_LOG == {(TABLE, "x", "R"): ["A", "F", "G"]}


def test_the_conflict_endpoints_report_counts_and_reset_restores_the_defaults(ddb) -> None:
    defaults = {"window": ferry_moto.DEFAULT_CONFLICT_WINDOW, "rate": 0.0, "met": {"transactions": 0, "writes": 0}}
    assert conflicts(ddb) == defaults
    assert 0 < defaults["window"] <= 0.05, "faithful by default: a short window, never none"
    conflicts(ddb, window=0.25)
    assert conflicts(ddb, rate=1) == {**defaults, "window": 0.25, "rate": 1.0}, "one setting leaves the other"
    for pk in ("a", "b"):
        with pytest.raises(ClientError):
            ddb.transact_write_items(TransactItems=[update(pk, "1")])
    with pytest.raises(ClientError):
        ddb.put_item(TableName=TABLE, Item=key("c"))
    assert conflicts(ddb)["met"] == {"transactions": 2, "writes": 1}
    for bad in ({"rate": 1.5}, {"rate": -0.1}, {"rate": True}, {"window": -1}, {"window": "1"},
                {"window": 0.1, "rate": 2}):
        status, answer = control(ddb.meta.endpoint_url, "POST", "/_ferry/dynamodb/conflicts", bad)
        assert status == 400, (bad, answer)
    assert conflicts(ddb) == {"window": 0.25, "rate": 1.0, "met": {"transactions": 2, "writes": 1}}, "nothing changed"
    assert control(ddb.meta.endpoint_url, "POST", "/_ferry/reset") == (200, {"status": "ok"})
    assert conflicts(ddb) == defaults
