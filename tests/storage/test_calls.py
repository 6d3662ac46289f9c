"""The call registry: start, finish exactly once and atomically, read back per organisation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gateway.storage import NotFound, agents, calls, orgs
from gateway.storage.calls import MessageRecord, TurnRecord
from gateway.storage.orgs import Organization

TURNS = [
    TurnRecord("agent", "Hello, how can I help?", 0, 1800),
    TurnRecord("user", "leave a message", 2100, 3000),
    TurnRecord("agent", "Sure, go ahead after the", 3200, 4100, "Sure, go ahead", True),
]
MESSAGE = MessageRecord("call me back", b"\x01\x00" * 8000, 16000, 500)


async def _start(database, org: Organization, **kw) -> uuid.UUID:
    await agents.create_or_new_version(database.pool, org.id, "secretary", {"v": 1})
    agent = await agents.get_current(database.pool, org.id, "secretary")
    assert agent is not None
    return await calls.start_call(
        database.pool,
        org_id=org.id,
        agent_id=agent.id,
        agent_version=agent.version,
        door="grpc",
        caller_number="+14155550123",
        caller_metadata={"crm_id": "42"},
        input_format="linear16/16000",
        output_format="pcmu/8000",
        replica="r1",
        **kw,
    )


async def _finish(database, call_id: uuid.UUID, **kw) -> bool:
    args = {
        "ended_at": datetime.now(UTC),
        "duration_ms": 4200,
        "end_reason": "caller_hangup",
        "latency": {"turns": 1, "user_to_bot_ms_p50": 610, "user_to_bot_ms_max": 610},
        "turns": TURNS,
        "message": MESSAGE,
    }
    args.update(kw)
    return await calls.finish_call(database.pool, call_id, **args)  # type: ignore[arg-type]


async def test_start_and_finish_store_everything(database, org: Organization) -> None:
    call_id = await _start(database, org)
    live = await calls.get_call(database.pool, call_id)
    assert live is not None and live.status == "active" and live.heartbeat_at is not None
    assert live.caller_metadata == {"crm_id": "42"}
    assert await _finish(database, call_id)

    ended = await calls.get_call(database.pool, call_id, org_id=org.id)
    assert ended is not None
    assert (ended.status, ended.end_reason, ended.duration_ms) == ("ended", "caller_hangup", 4200)
    assert ended.latency == {"turns": 1, "user_to_bot_ms_p50": 610, "user_to_bot_ms_max": 610}
    turns = await calls.list_turns(database.pool, call_id)
    assert [(t.seq, t.role, t.text, t.heard_text, t.interrupted) for t in turns] == [
        (0, "agent", "Hello, how can I help?", None, False),
        (1, "user", "leave a message", None, False),
        (2, "agent", "Sure, go ahead after the", "Sure, go ahead", True),
    ]
    message = await calls.get_message(database.pool, call_id)
    assert message is not None and message.org_id == org.id
    assert (message.text, message.audio, message.sample_rate) == (
        "call me back",
        MESSAGE.audio,
        16000,
    )
    assert (message.audio_encoding, message.duration_ms) == ("linear16", 500)


async def test_second_finish_is_a_no_op(database, org: Organization) -> None:
    call_id = await _start(database, org)
    assert await _finish(database, call_id)
    assert not await _finish(database, call_id, end_reason="error", turns=TURNS * 2)
    ended = await calls.get_call(database.pool, call_id)
    assert ended is not None and ended.end_reason == "caller_hangup"
    assert len(await calls.list_turns(database.pool, call_id)) == len(TURNS)


async def test_concurrent_finishes_write_once(database, org: Organization) -> None:
    call_id = await _start(database, org)
    results = await asyncio.gather(*(_finish(database, call_id) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert len(await calls.list_turns(database.pool, call_id)) == len(TURNS)
    count = await database.pool.fetchval(
        "SELECT count(*) FROM messages WHERE call_id = $1", call_id
    )
    assert count == 1


async def test_finish_is_all_or_nothing(database, org: Organization) -> None:
    call_id = await _start(database, org)
    broken = [*TURNS, TurnRecord("robot", "not a role", 0, 1)]  # violates the role CHECK
    with pytest.raises(asyncpg.CheckViolationError):
        await _finish(database, call_id, turns=broken)
    call = await calls.get_call(database.pool, call_id)
    assert call is not None and call.status == "active" and call.ended_at is None
    assert await calls.list_turns(database.pool, call_id) == []
    assert await calls.get_message(database.pool, call_id) is None
    assert await _finish(database, call_id)  # the retry succeeds


async def test_finish_without_turns_or_message(database, org: Organization) -> None:
    call_id = await _start(database, org)
    assert await _finish(database, call_id, turns=[], message=None, latency=None)
    assert await calls.list_turns(database.pool, call_id) == []
    assert await calls.get_message(database.pool, call_id) is None


async def test_finish_of_an_unknown_call(database) -> None:
    with pytest.raises(NotFound):
        await _finish(database, uuid.uuid4())


async def test_calls_are_listed_per_organisation_newest_first(database, org) -> None:
    other = await orgs.create(database.pool, f"{org.name}-other")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    ids = [await _start(database, org, started_at=base + timedelta(minutes=i)) for i in range(5)]
    foreign = await _start(database, other)

    page1 = await calls.list_calls(database.pool, org.id, limit=2)
    assert [c.id for c in page1] == [ids[4], ids[3]]
    last = page1[-1]
    page2 = await calls.list_calls(
        database.pool, org.id, limit=10, before=(last.started_at, last.id)
    )
    assert [c.id for c in page2] == [ids[2], ids[1], ids[0]]
    assert await calls.get_call(database.pool, foreign, org_id=org.id) is None
    assert [c.id for c in await calls.list_calls(database.pool, other.id)] == [foreign]

    await _finish(database, ids[0])
    active = await calls.list_calls(database.pool, org.id, status="active")
    assert ids[0] not in [c.id for c in active] and len(active) == 4


async def test_heartbeat_and_answer(database, org: Organization) -> None:
    call_id = await _start(database, org)
    before = await calls.get_call(database.pool, call_id)
    await calls.mark_answered(database.pool, call_id)
    assert await calls.heartbeat(database.pool, [call_id, uuid.uuid4()]) == 1
    after = await calls.get_call(database.pool, call_id)
    assert before is not None and after is not None and after.answered_at is not None
    assert after.heartbeat_at >= before.heartbeat_at  # type: ignore[operator]
    await _finish(database, call_id)
    assert await calls.heartbeat(database.pool, [call_id]) == 0


async def test_unknown_door_is_rejected(database, org: Organization) -> None:
    with pytest.raises(ValueError, match="door"):
        await calls.start_call(database.pool, org_id=org.id, door="pigeon")
