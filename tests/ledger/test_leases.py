"""The ``sending`` row and its lease: live, dead, expired, renewed; cancellations before and
after the POST left."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prism_async import (
    AmbiguousSubmissionError,
    InvalidRequestError,
    PrismClient,
    SubmissionInFlightError,
)
from prism_async.ledger import SQLiteLedger, Submission
from prism_async.ledger._model import Owner, lease_is_alive
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT
from tests.ledger.helpers import (
    CREATE_PATH,
    S,
    create,
    ledger_of,
    make_ambiguous,
    make_rejected,
    open_client,
    posts,
    row,
    until,
)
from tests.ledger_helpers import bumped, dead_owner

# -- sending: the lease ------------------------------------------------------------------------


def _owner(kind: str) -> tuple[str, timedelta]:
    """A lease owner and the time left on its lease."""
    me = Owner.me()
    return {
        "dead process": (str(dead_owner()), timedelta(minutes=1)),
        "reused pid": (str(Owner(me.host, me.pid, "not-its-start-time")), timedelta(minutes=1)),
        "expired": (str(me), -timedelta(seconds=1)),
        "live, this process": (str(me), timedelta(minutes=1)),
        "live, another host": (f"{socket.gethostname()}-elsewhere:1:1", timedelta(minutes=1)),
    }[kind]


@pytest.mark.parametrize(
    ("lease", "alive"),
    [
        ("dead process", False),
        ("reused pid", False),
        ("expired", False),
        ("live, this process", True),
        ("live, another host", True),
    ],
)
async def test_a_sending_row_and_its_lease(
    prism: PrismClient, server: FakePrismServer, lease: str, alive: bool
) -> None:
    """A ``sending`` row (a crash, or someone sending right now): a live lease is
    SubmissionInFlightError and the row stays; a dead one (its process gone, its pid reused
    by another process, or expired) becomes ambiguous. Neither sends."""
    rejected = await make_rejected(prism, server, "k")
    owner, left = _owner(lease)
    sending = bumped(
        rejected,
        state=S.SENDING,
        attempt=2,
        sent_at=datetime.now(UTC),
        lease_owner=owner,
        lease_expires=datetime.now(UTC) + left,
        error=None,
    )
    assert await ledger_of(prism).swap(rejected, sending)
    assert lease_is_alive(sending, datetime.now(UTC)) is alive
    sent = posts(server)

    if alive:
        with pytest.raises(SubmissionInFlightError) as flight:
            await create(prism, "k")
        assert flight.value.key == "k"
        assert flight.value.maybe_sent
        assert await row(prism, "k") == sending
        with pytest.raises(SubmissionInFlightError):
            await prism.reconcile("k")
        with pytest.raises(InvalidRequestError, match="live process"):
            await ledger_of(prism).resolve("k", not_sent=True)
        assert await row(prism, "k") == sending
    else:
        with pytest.raises(AmbiguousSubmissionError) as info:
            await create(prism, "k")
        now_ambiguous = await row(prism, "k")
        assert now_ambiguous.state == S.AMBIGUOUS
        assert now_ambiguous.attempt == 2
        assert (now_ambiguous.lease_owner, now_ambiguous.lease_expires) == (None, None)
        assert now_ambiguous.error is not None
        assert "stopped" in now_ambiguous.error
        assert info.value.submission == now_ambiguous
        with pytest.raises(AmbiguousSubmissionError):
            await create(prism, "k")
    assert posts(server) == sent
    assert len(server.generations) == 0


async def test_reconcile_settles_a_crash_after_the_post(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The POST was queued, then the process died before recording the answer (its row still
    ``sending``, its owner gone): reconcile marks it ambiguous and finds the generation."""
    ambiguous = await make_ambiguous(prism, server, "k")
    crashed = bumped(
        ambiguous,
        state=S.SENDING,
        error=None,
        lease_owner=str(dead_owner()),
        lease_expires=datetime.now(UTC) + timedelta(minutes=1),
    )
    assert await ledger_of(prism).swap(ambiguous, crashed)
    reconciled = await prism.reconcile("k")
    assert reconciled.state == S.RECONCILED
    assert reconciled.generation_ids == tuple(server.generations)
    assert posts(server) == 1


async def test_a_second_task_with_the_key_in_flight_is_refused(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """While one task's POST is in flight, the same key from another task is in flight
    (this process holds the lease); afterwards the batch replays."""
    server.inject("POST", CREATE_PATH, delay=0.5)
    first = asyncio.create_task(create(prism, "k"))
    await until(lambda: posts(server) == 1)
    in_flight = await row(prism, "k")
    assert in_flight.state == S.SENDING
    assert in_flight.lease_owner == str(Owner.me())
    assert in_flight.lease_expires is not None
    assert in_flight.lease_expires > datetime.now(UTC) + timedelta(seconds=prism.timeout)
    with pytest.raises(SubmissionInFlightError):
        await create(prism, "k")
    batch = await first
    assert (await create(prism, "k")).ids == batch.ids
    assert posts(server) == 1


async def test_the_lease_is_renewed_while_the_post_is_in_flight(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """With a short lease (0.3 s, renewed every 0.1 s) and a POST answered after 0.6 s, the
    row stays ``sending`` under a live lease whose expiry moves on; then it is accepted."""
    durable = prism._durable
    assert durable is not None
    durable.lease = timedelta(seconds=0.3)
    server.inject("POST", CREATE_PATH, delay=0.6)
    task = asyncio.create_task(create(prism, "k"))
    await until(lambda: posts(server) == 1)
    seen: list[Submission] = []
    while not task.done():
        current = await row(prism, "k")
        if current.state == S.SENDING:
            assert lease_is_alive(current, datetime.now(UTC)), current
            seen.append(current)
        await asyncio.sleep(0.05)
    batch = await task
    expiries = sorted({s.lease_expires for s in seen if s.lease_expires is not None})
    assert len(expiries) >= 3  # renewed at least twice
    assert max(s.version for s in seen) >= 2
    accepted = await row(prism, "k")
    assert accepted.state == S.ACCEPTED
    assert accepted.generation_ids == tuple(batch.ids)
    assert accepted.lease_expires is None


async def test_cancelled_in_flight_is_ambiguous(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The task is cancelled while its POST is in flight (the server queued it): the row is
    ambiguous, CancelledError propagates, and reconcile finds the generation."""
    server.inject("POST", CREATE_PATH, delay=5, processed=True)
    task = asyncio.create_task(create(prism, "k"))
    await until(lambda: len(server.generations) == 1)
    assert (await row(prism, "k")).state == S.SENDING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = await row(prism, "k")
    assert cancelled.state == S.AMBIGUOUS
    assert cancelled.error is not None
    assert "cancelled" in cancelled.error
    assert (cancelled.lease_owner, cancelled.lease_expires) == (None, None)
    with pytest.raises(AmbiguousSubmissionError):
        await create(prism, "k")
    assert (await prism.reconcile("k")).generation_ids == tuple(server.generations)
    assert posts(server) == 1


class StallingLedger(SQLiteLedger):
    """A SQLiteLedger whose ``stall`` write ("insert", or "swap" to ``sending``) lands, then
    never returns (until cancelled): a call cancelled while committing its row. With
    ``blind_get`` its first ``get`` answers None (another task inserted the key meanwhile)."""

    def __init__(self, path: Path, *, stall: str, blind_get: bool = False) -> None:
        super().__init__(path)
        self.stall = stall
        self.blind_get = blind_get
        self.stalled = asyncio.Event()

    async def get(self, key: str) -> Submission | None:
        if self.blind_get:
            self.blind_get = False
            return None
        return await super().get(key)

    async def _hang(self) -> None:
        self.stalled.set()
        await asyncio.Event().wait()

    async def insert(self, submission: Submission) -> bool:
        done = await super().insert(submission)
        if self.stall == "insert":
            await self._hang()
        return done

    async def swap(self, expected: Submission, new: Submission) -> bool:
        done = await super().swap(expected, new)
        if self.stall == "swap" and new.state == S.SENDING:
            await self._hang()
        return done


@pytest.mark.parametrize("stall", ["insert", "swap"])
async def test_cancelled_while_committing_the_row_is_rejected(
    server: FakePrismServer, db: Path, stall: str
) -> None:
    """Cancelled after the ``sending`` row was written but before the POST left: nothing was
    sent, so the row is ``rejected`` (not left ``sending`` under this live process's lease,
    which would be SubmissionInFlightError, then ambiguous); the key sends on the next call."""
    async with open_client(server, db) as prism:
        if stall == "swap":  # a rejected key being sent again
            await make_rejected(prism, server, "k")
    ledger = StallingLedger(db, stall=stall)
    async with PrismClient(
        server.api_key, base_url=server.base_url, retry=NO_WAIT, ledger=ledger
    ) as prism:
        sent = posts(server)
        task = asyncio.create_task(create(prism, "k"))
        await ledger.stalled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled = await row(prism, "k")
        assert cancelled.state == S.REJECTED
        assert cancelled.error == "cancelled before it was sent"
        assert (cancelled.lease_owner, cancelled.lease_expires) == (None, None)
        assert posts(server) == sent
        ledger.stall = ""
        await create(prism, "k")
        accepted = await row(prism, "k")
        assert accepted.state == S.ACCEPTED
        assert accepted.attempt == cancelled.attempt + 1
        assert posts(server) == sent + 1


async def test_a_cancelled_claim_leaves_another_tasks_row_alone(
    server: FakePrismServer, db: Path
) -> None:
    """Two tasks race for a new key; the loser (its insert refused) is cancelled while
    committing: the winner's ``sending`` row is not touched, and it is accepted."""
    server.inject("POST", CREATE_PATH, delay=0.3)
    async with open_client(server, db) as winner:
        first = asyncio.create_task(create(winner, "k"))
        await until(lambda: posts(server) == 1)
        sending = await row(winner, "k")
        loser_ledger = StallingLedger(db, stall="insert", blind_get=True)
        async with PrismClient(
            server.api_key, base_url=server.base_url, retry=NO_WAIT, ledger=loser_ledger
        ) as loser:
            second = asyncio.create_task(create(loser, "k"))
            await loser_ledger.stalled.wait()
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            assert await row(loser, "k") == sending
        batch = await first
        assert (await row(winner, "k")).generation_ids == tuple(batch.ids)
    assert posts(server) == 1


async def test_a_prompt_too_short_to_search_for_stays_ambiguous(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The history search needs 2 characters: a one-character prompt cannot be looked up, so
    reconcile says so (instead of failing on its own search) and the key is resolved by hand."""
    await make_ambiguous(prism, server, "k", prompt="A")
    still = await prism.reconcile("k")
    assert still.state == S.AMBIGUOUS
    assert still.error is not None
    assert "too short" in still.error
    assert not server.requests_to("GET", "/api/assets/search")
    (queued,) = server.generations
    await ledger_of(prism).resolve("k", generation_ids=[queued])
    assert (await create(prism, "k", prompt="A")).ids == [queued]
