"""What waits and downloads record, template keys and their webhooks, what the ledger never
holds (the API key) and what it logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from prism_async import (
    AmbiguousSubmissionError,
    Generation,
    GenerationFailedError,
    InsufficientCreditsError,
    PrismClient,
    PrismError,
    SubmissionConflictError,
)
from prism_async.ledger import GenerationRecord, SQLiteLedger
from prism_async.ledger._durable import Durable
from prism_async.ledger._model import Owner
from prism_async.testing import FakePrismServer
from prism_async.webhooks import TOKEN_PARAM, WebhookHub
from tests.conftest import GENERATION_SECONDS, NO_WAIT, assert_key_free
from tests.ledger.helpers import (
    LEDGER_LOGGER,
    TEMPLATE_PATH,
    S,
    create,
    ledger_of,
    make_ambiguous,
    new_hub,
    open_client,
    posts,
    row,
)
from tests.ledger_helpers import dead_owner

# -- what waits and downloads record -------------------------------------------------------------


async def test_waits_and_downloads_are_recorded(
    prism: PrismClient, server: FakePrismServer, tmp_path: Path
) -> None:
    """A wait records the terminal status (completed, or failed with its error); a download
    records the file's path and size, keeping the status."""
    ok = await create(prism, "ok")
    bad = await create(prism, "bad", prompt="[fail] A red fox")
    ledger = ledger_of(prism)
    server.advance(GENERATION_SECONDS)

    video = await prism.wait_for_generation(ok.ids[0])
    completed = await ledger.generation(video.id)
    assert completed is not None
    assert (completed.status, completed.error) == ("completed", None)
    assert completed.key == "ok"  # named when it was accepted (for other processes' waits)
    assert completed.completed_at is not None
    assert completed.completed_at == video.completed_at

    with pytest.raises(GenerationFailedError):
        await prism.wait_for_generation(bad.ids[0])
    failed = await ledger.generation(bad.ids[0])
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "Generation failed")
    assert failed.path is None

    path = await prism.generations.download(video, tmp_path)
    downloaded = await ledger.generation(video.id)
    assert downloaded is not None
    assert downloaded.path == str(path)
    assert downloaded.size == path.stat().st_size == len(server.video)
    assert downloaded.status == "completed"


# -- templates and webhooks ----------------------------------------------------------------------


TEMPLATE_KEY = "campaign 42/clip&7=ünï"
VARIABLES = {"hook": "Hello there", "benefit": "Saves time"}


async def test_a_template_key_rides_in_the_hub_url_and_not_in_the_fingerprint(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """The webhook URL the fake receives carries ``prism_key=<key>`` (and still the hub's
    token); a new hub (another token, another URL) with the same key replays, no POST."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        batch = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
        )
        recorded = await row(prism, TEMPLATE_KEY)
    (post,) = server.requests_to("POST", TEMPLATE_PATH)
    sent_url = post.json["webhook_url"]
    query = dict(parse_qsl(urlsplit(sent_url).query))
    assert query["prism_key"] == TEMPLATE_KEY
    assert hub.owns(sent_url)
    assert (recorded.kind, recorded.state) == ("template", S.ACCEPTED)
    assert recorded.generation_ids == tuple(batch.ids)
    assert recorded.credits_charged == batch.credits_charged

    other_hub, other_url = new_hub(hook_root)
    async with open_client(server, db, webhooks=other_hub) as prism:
        again = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=other_url, key=TEMPLATE_KEY
        )
        assert again.ids == batch.ids
        assert again.template_id == "abc123"
        no_hook = await prism.templates.generate("abc123", variables=VARIABLES, key=TEMPLATE_KEY)
        assert no_hook.ids == batch.ids
        with pytest.raises(SubmissionConflictError):
            await prism.templates.generate(
                "abc123", variables={**VARIABLES, "hook": "Bye"}, key=TEMPLATE_KEY
            )
        with pytest.raises(SubmissionConflictError):
            await prism.templates.generate("featured-still", variables={}, key=TEMPLATE_KEY)

        # its webhook arrives later: an accepted row is left as it is
        server.advance(GENERATION_SECONDS)
        await server.drain_webhooks()
        assert [d.status for d in server.webhook_deliveries] == [200]
        assert await row(prism, TEMPLATE_KEY) == recorded
    assert posts(server, TEMPLATE_PATH) == 1


async def test_a_foreign_webhook_url_is_sent_as_given(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """Only the hub's own URLs carry the key: another URL is the caller's, untouched."""
    hub, _ = new_hub(hook_root)
    foreign = "https://example.test/hooks/prism?tenant=7"
    async with open_client(server, db, webhooks=hub) as prism:
        await prism.templates.generate("abc123", variables=VARIABLES, webhook_url=foreign, key="t")
    assert server.requests_to("POST", TEMPLATE_PATH)[0].json["webhook_url"] == foreign


async def test_an_ambiguous_template_key_is_settled_by_its_webhook(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """A processed 502 on templates.generate: ambiguous; reconcile cannot search for it and
    says so; the webhook that arrives for its generation (URL carrying the key) settles it
    as reconciled with that generation's id; the key then replays."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        server.inject("POST", TEMPLATE_PATH, status=502, processed=True)
        with pytest.raises(PrismError) as info:
            await prism.templates.generate(
                "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
            )
        assert info.value.maybe_sent
        (queued,) = server.generations
        ambiguous = await row(prism, TEMPLATE_KEY)
        assert (ambiguous.state, ambiguous.generation_ids) == (S.AMBIGUOUS, ())

        still = await prism.reconcile(TEMPLATE_KEY)
        assert still.state == S.AMBIGUOUS
        assert still.error is not None
        assert "webhook" in still.error
        with pytest.raises(AmbiguousSubmissionError):
            await prism.templates.generate(
                "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
            )

        server.advance(GENERATION_SECONDS)
        await server.drain_webhooks()
        (delivery,) = server.webhook_deliveries
        assert delivery.status == 200
        assert dict(parse_qsl(urlsplit(delivery.url).query))["prism_key"] == TEMPLATE_KEY

        settled = await row(prism, TEMPLATE_KEY)
        assert settled.state == S.RECONCILED
        assert settled.generation_ids == (queued,)
        batch = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
        )
        assert batch.ids == [queued]
    assert posts(server, TEMPLATE_PATH) == 1


async def test_a_webhook_naming_a_generation_key_changes_nothing(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """Webhooks are unauthenticated hints: one naming a prompt submission's key (which sends
    no webhook URL) does not settle it."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        ambiguous = await make_ambiguous(prism, server, "k")
        token = dict(parse_qsl(urlsplit(url).query))[TOKEN_PARAM]
        body = json.dumps({"generation_id": "gen_forged", "status": "completed"})
        reply = await hub.handle(body, {TOKEN_PARAM: token, "prism_key": "k"})
        assert reply.status == 200
        assert await row(prism, "k") == ambiguous


# -- what the ledger never holds, and what it logs -----------------------------------------------


async def test_the_api_key_never_reaches_the_ledger(
    db: Path, tmp_path: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """After accepted, rejected (401 and 402), ambiguous, template, wait and download rows,
    neither the API key, a wrong key tried, the hub's token nor a presigned URL is in the
    SQLite file or its WAL, nor in a row's repr."""
    secret = "prism_sk_live_5ecret0123456789abcdef"
    wrong = "prism_sk_live_wrongkey98765432100000"
    hub, url = new_hub(hook_root)
    token = dict(parse_qsl(urlsplit(url).query))[TOKEN_PARAM]
    forbidden = [secret.encode(), wrong.encode(), token.encode(), b"X-Amz-Signature"]

    def assert_clean() -> None:
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists():
                data = path.read_bytes()
                for text in forbidden:
                    assert text not in data, (path.name, text)

    async with FakePrismServer(api_key=secret, generation_seconds=GENERATION_SECONDS) as fake:
        async with open_client(fake, db, webhooks=hub) as prism:
            batch = await create(prism, "accepted")
            fake.credits = 0
            with pytest.raises(InsufficientCreditsError):
                await create(prism, "rejected")
            fake.credits = 10_000
            assert prism.ledger is not None
            await prism.ledger.clear_paid_pause()  # topped up: end the 402's fleet-wide pause
            ambiguous = await make_ambiguous(prism, fake, "ambiguous")
            await prism.templates.generate("abc123", variables=VARIABLES, webhook_url=url, key="t")
            fake.advance(GENERATION_SECONDS)
            video = await prism.wait_for_generation(batch.ids[0])
            await prism.generations.download(video, tmp_path)
            with pytest.raises(AmbiguousSubmissionError) as info:
                await create(prism, "ambiguous")
            assert_key_free(info.value, secret)
            rows = [s async for s in ledger_of(prism).list()]
            assert [s.key for s in rows] == ["accepted", "rejected", "ambiguous", "t"]
            for submission in rows:
                assert secret not in repr(submission)
                assert token not in repr(submission)
            assert ambiguous.error is not None
            assert_clean()  # while open: recent pages are in the WAL
        async with PrismClient(
            wrong, base_url=fake.base_url, retry=NO_WAIT, ledger=SQLiteLedger(db)
        ) as intruder:
            with pytest.raises(PrismError):
                await create(intruder, "unauthorized")
            assert (await row(intruder, "unauthorized")).state == S.REJECTED
    assert_clean()  # after closing: checkpointed into the main file


async def test_state_changes_are_logged(
    prism: PrismClient, server: FakePrismServer, caplog: pytest.LogCaptureFixture
) -> None:
    """INFO when a row is committed as sending and when it is accepted (key, attempt, state,
    ids, also as record attributes); WARNING when it becomes ambiguous."""
    caplog.set_level(logging.INFO, logger=LEDGER_LOGGER)
    batch = await create(prism, "clip-1")
    records = [r for r in caplog.records if r.name == LEDGER_LOGGER]
    assert [(r.levelno, r.__dict__["prism_state"]) for r in records] == [
        (logging.INFO, S.SENDING),
        (logging.INFO, S.ACCEPTED),
    ]
    sending, accepted = records
    assert "key='clip-1'" in sending.getMessage()
    assert "attempt=1" in sending.getMessage()
    assert "state=sending" in sending.getMessage()
    assert "state=accepted" in accepted.getMessage()
    assert f"ids={batch.ids[0]}" in accepted.getMessage()
    assert accepted.__dict__["prism_key"] == "clip-1"
    assert accepted.__dict__["prism_attempt"] == 1
    assert accepted.__dict__["prism_generation_ids"] == batch.ids

    caplog.clear()
    await create(prism, "clip-1")  # a replay is not a state change
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []

    await make_ambiguous(prism, server, "clip-2")
    warnings = [r for r in caplog.records if r.name == LEDGER_LOGGER and r.levelno >= 30]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "key='clip-2'" in warnings[0].getMessage()
    assert "state=ambiguous" in warnings[0].getMessage()


# -- the lease owner -----------------------------------------------------------------------------


def test_an_owner_names_host_pid_and_start() -> None:
    """``Owner`` round-trips through its text; this process is alive, an exited one and a
    reused pid are gone, a process of another host is never known to be gone."""
    me = Owner.me()
    assert me.pid == os.getpid()
    assert me.host == socket.gethostname()
    assert Owner.parse(str(me)) == me
    assert Owner.parse("host.with:colons:12:345") == Owner("host.with:colons", 12, "345")
    assert Owner.parse("garbage") is None
    assert Owner.parse("host:notapid:1") is None
    assert not me.is_gone()
    assert dead_owner().is_gone()
    assert Owner(me.host, me.pid, "another-start").is_gone()
    assert not Owner("some-other-host", 1, "1").is_gone()


async def test_generation_records_are_written_in_groups(tmp_path: Path) -> None:
    """Records arriving while a batch is written go in the next batch (one transaction each),
    every caller waits for its own, and a cancelled caller's record is written anyway."""
    ledger = SQLiteLedger(tmp_path / "group.db")
    batches: list[int] = []
    record_many = ledger.record_many

    async def counting(records: Sequence[GenerationRecord]) -> None:
        batches.append(len(records))
        await record_many(records)

    ledger.record_many = counting  # type: ignore[method-assign]
    durable = Durable(ledger, timeout=10)
    try:
        finished = [Generation(id=f"gen_{i}", status="completed") for i in range(50)]
        await asyncio.gather(*(durable.finished(g) for g in finished))
        assert sum(batches) == 50
        assert len(batches) < 50  # grouped
        cancelled = asyncio.create_task(durable.downloaded("gen_0", "/v/gen_0.mp4", 7))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        for _ in range(100):
            record = await ledger.generation("gen_0")
            if record is not None and record.path is not None:
                break
            await asyncio.sleep(0.01)
        assert record == GenerationRecord("gen_0", status="completed", path="/v/gen_0.mp4", size=7)
        assert await ledger.generation("gen_49") == GenerationRecord("gen_49", status="completed")
    finally:
        await ledger.aclose()
