"""The stream side of PrismStreamBroker: its Lua scripts and its dead letters.

Redis counts the deliveries of every pending entry (``XPENDING``): ``XREADGROUP`` delivers once,
each reclaim by another worker (``XCLAIM``) once more, a heartbeat (``XCLAIM ... JUSTID``)
never. The scripts here keep that count meaning "failed deliveries":

* :data:`RECLAIM`: a worker takes the entries idle past ``idle_timeout`` (their worker died, or
  handed them back), except those already delivered ``max_deliveries`` times: those are parked
  in the dead-letter stream ``<queue>:dead`` with their last error, acknowledged (and deleted)
  on the main stream, and returned for an ERROR line.
* :data:`HAND_BACK`: a worker gives entries back, made claimable at once (idle as if their
  worker had died). A stopping worker's hand-back does not count as a delivery (the count goes
  back down by one); a delivery that ended without an acknowledgement does, and its error is
  recorded in ``<stream>:errors`` (``"<deliveries>|<error>"``), which the dead letter shows
  when that was its last delivery ("worker died" otherwise).
* :data:`REQUEUE`: dead letters put back on their stream as new entries (a fresh count).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.exceptions import LockError, ResponseError

from .._fleet._weather import OUTAGE_ERRORS

if TYPE_CHECKING:
    from ._broker import PrismStreamBroker

__all__ = [
    "HAND_BACK",
    "RECLAIM",
    "TOUCH",
    "WORKER_DIED",
    "DeadLetter",
    "dead_stream",
    "declare_lost_group",
    "errors_key",
    "read_dead_letters",
    "reclaim",
    "requeue_dead_letters",
]

logger = logging.getLogger("prism_async.taskiq")

WORKER_DIED = "worker died"
"""The error of a dead letter whose last delivery ended with its worker (killed, crashed)."""


def dead_stream(queue: str) -> str:
    """The dead-letter stream of ``queue``."""
    return f"{queue}:dead"


def errors_key(stream: str) -> str:
    """The hash of the last errors of ``stream``'s pending entries."""
    return f"{stream}:errors"


# KEYS: stream; ARGV: group, consumer, ids... Touch (reset the idle time of) the ids this
# consumer still owns; one another consumer reclaimed is left to it.
TOUCH = """
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if entry[1] ~= nil and entry[1][2] == ARGV[2] then claim[#claim + 1] = ARGV[i] end
end
if #claim == 5 then return 0 end
claim[#claim + 1] = 'JUSTID'
return #redis.call(unpack(claim))
"""

# KEYS: stream, dead stream, errors hash; ARGV: group, consumer, min idle ms, count,
# max deliveries, now (ms), delete ("1": XDEL a parked entry). Returns {claimed, parked}:
# claimed as XCLAIM answers; parked as {id, deliveries, error, data}.
RECLAIM = """
local group, consumer, idle = ARGV[1], ARGV[2], tonumber(ARGV[3])
local most = tonumber(ARGV[5])
local pending = redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, '-', '+', tonumber(ARGV[4]))
local claim, parked = {}, {}
for _, entry in ipairs(pending) do
  local id, owner, deliveries = entry[1], entry[2], tonumber(entry[4])
  if deliveries >= most then
    local reason = 'worker died'
    local recorded = redis.call('HGET', KEYS[3], id)
    if recorded then
      local count, text = string.match(recorded, '^(%d+)|(.*)$')
      if count and tonumber(count) == deliveries then reason = text end
    end
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found > 0 then
      local data = ''
      local fields = found[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'data' then data = fields[i + 1] end
      end
      redis.call('XADD', KEYS[2], '*', 'data', data, 'stream', KEYS[1], 'id', id,
        'deliveries', deliveries, 'error', reason, 'parked_at', ARGV[6], 'consumer', owner)
      parked[#parked + 1] = {id, deliveries, reason, data}
    end
    redis.call('XACK', KEYS[1], group, id)
    if ARGV[7] == '1' then redis.call('XDEL', KEYS[1], id) end
    redis.call('HDEL', KEYS[3], id)
  else
    claim[#claim + 1] = id
  end
end
local claimed = {}
if #claim > 0 then claimed = redis.call('XCLAIM', KEYS[1], group, consumer, idle, unpack(claim)) end
return {claimed, parked}
"""

# KEYS: stream, errors hash; ARGV: group, consumer, idle ms, error ("": a stopping worker's
# hand-back, not counted as a delivery), ids... Returns how many were handed back (the ids
# this consumer still owned).
HAND_BACK = """
local handed = 0
for i = 5, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if entry[1] ~= nil and entry[1][2] == ARGV[2] then
    local deliveries = tonumber(entry[1][4])
    if ARGV[4] == '' then
      deliveries = math.max(deliveries - 1, 0)
    else
      redis.call('HSET', KEYS[2], ARGV[i], deliveries .. '|' .. ARGV[4])
    end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3],
      'RETRYCOUNT', deliveries, 'JUSTID')
    handed = handed + 1
  end
end
return handed
"""

# KEYS: dead stream; ARGV: ids. Each found is added to its stream again (a new entry) and
# deleted from the dead stream. Returns {dead id, stream, new id} per requeued one.
REQUEUE = """
local done = {}
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    local fields, values = found[1][2], {}
    for j = 1, #fields, 2 do values[fields[j]] = fields[j + 1] end
    local new = redis.call('XADD', values['stream'], '*', 'data', values['data'])
    redis.call('XDEL', KEYS[1], ARGV[i])
    done[#done + 1] = {ARGV[i], values['stream'], new}
  end
end
return done
"""


@dataclass(frozen=True)
class DeadLetter:
    """A message parked in a dead-letter stream after too many deliveries.

    Attributes:
        id: its id in the dead-letter stream (what ``--requeue`` takes).
        stream: the stream it came from (and goes back to when requeued).
        message_id: its id there.
        deliveries: how many times it was delivered.
        error: its last delivery's error, or ``"worker died"``.
        parked_at: when it was parked.
        consumer: the worker (consumer name) of its last delivery.
        data: the message as the broker sent it (taskiq's JSON, by default).
    """

    id: str
    stream: str
    message_id: str
    deliveries: int
    error: str
    parked_at: datetime
    consumer: str
    data: bytes

    @property
    def message(self) -> dict[str, Any]:
        """The taskiq message (``task_name``, ``args``, ``kwargs``, ...); empty when it is not
        JSON (a custom formatter)."""
        try:
            decoded = json.loads(self.data)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    @property
    def task_name(self) -> str:
        """The task it runs ("?" when the message cannot be read)."""
        return str(self.message.get("task_name", "?"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (what ``dead-letters --json`` prints)."""
        message = self.message
        return {
            "id": self.id,
            "stream": self.stream,
            "message_id": self.message_id,
            "task_name": self.task_name,
            "task_id": message.get("task_id"),
            "args": message.get("args", []),
            "kwargs": message.get("kwargs", {}),
            "deliveries": self.deliveries,
            "error": self.error,
            "parked_at": self.parked_at.isoformat(),
            "consumer": self.consumer,
        }


async def reclaim(
    broker: PrismStreamBroker, redis: Redis, stream: str
) -> list[tuple[bytes, bytes]]:
    """Messages of ``stream`` idle past ``idle_timeout``, now ours (one batch); those
    delivered ``max_deliveries`` times already are parked as dead letters instead."""
    lock = redis.lock(
        f"autoclaim:{broker.consumer_group_name}:{stream}",
        timeout=broker.unacknowledged_lock_timeout,
        blocking=False,
    )
    if not await lock.acquire():
        return []  # another worker is reclaiming right now
    try:
        keys = (stream, dead_stream(stream), errors_key(stream))
        arguments = (broker.consumer_group_name, broker.consumer_name, broker.idle_timeout)
        answer = cast(
            list[list[Any]],
            await redis.eval(
                RECLAIM,
                3,
                *keys,
                *arguments,
                broker.unacknowledged_batch_size,
                broker.max_deliveries,
                int(time.time() * 1000),
                int(broker.delete_on_ack),
            ),
        )
    finally:
        with contextlib.suppress(LockError, *OUTAGE_ERRORS):
            await lock.release()
    claimed_entries, parked = answer
    for message_id, deliveries, error, data in parked:
        logger.error(
            "taskiq: parked message %s of %s (%s) in %s (deliveries: %d, last error: %s)",
            _text(message_id),
            stream,
            _task_name(broker, data),
            dead_stream(stream),
            deliveries,
            _text(error),
        )
    claimed = [(entry[0], _data(entry[1])) for entry in claimed_entries if entry]
    if claimed:
        logger.warning(
            "taskiq: reclaimed %d message(s) of %s idle for %.0f s or more "
            "(a worker died or handed them back)",
            len(claimed),
            stream,
            broker.idle_timeout / 1000,
        )
    return claimed


async def declare_lost_group(broker: PrismStreamBroker, redis: Redis) -> None:
    """The group is gone (a Redis that lost its data, an ``XGROUP DESTROY``): declare it
    again, from the stream's start when acknowledged messages are deleted (what is left on
    the stream is work not done yet)."""
    logger.warning(
        "taskiq: the consumer group %r is gone: declaring it again", broker.consumer_group_name
    )
    start = "0" if broker.delete_on_ack else broker.consumer_id
    for stream in broker._streams():
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker was first
            await redis.xgroup_create(stream, broker.consumer_group_name, id=start, mkstream=True)


def _data(fields: list[bytes]) -> bytes:
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    return values.get(b"data", b"")


def _task_name(broker: PrismStreamBroker, data: bytes) -> str:
    try:
        return f"task {broker.formatter.loads(data).task_name}"
    except Exception:  # only for a log line
        return "not a taskiq message"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _dead_letter(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    def field(name: str) -> str:
        return _text(fields.get(name.encode(), b""))

    parked_ms = int(field("parked_at") or 0)
    return DeadLetter(
        id=_text(entry_id),
        stream=field("stream"),
        message_id=field("id"),
        deliveries=int(field("deliveries") or 0),
        error=field("error"),
        parked_at=datetime.fromtimestamp(parked_ms / 1000, UTC),
        consumer=field("consumer"),
        data=fields.get(b"data", b""),
    )


async def read_dead_letters(redis: Redis, queue: str) -> list[DeadLetter]:
    """Every dead letter of ``queue``, oldest first (``redis`` answers bytes)."""
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(dead_stream(queue), "-", "+")
    )
    return [_dead_letter(entry_id, fields) for entry_id, fields in entries]


async def requeue_dead_letters(redis: Redis, queue: str, ids: list[str]) -> list[str]:
    """Put the dead letters ``ids`` of ``queue`` back on their stream; the ids requeued."""
    done: list[str] = []
    for start in range(0, len(ids), 100):
        batch = ids[start : start + 100]
        answer = cast(list[list[bytes]], await redis.eval(REQUEUE, 1, dead_stream(queue), *batch))
        done.extend(_text(row[0]) for row in answer)
    return done
