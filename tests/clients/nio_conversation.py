"""A two-person conversation driven by matrix-nio, a client library nobody here wrote.

usage: nio_conversation.py HOMESERVER_URL REGISTRATION_TOKEN
Expects @alice:localhost with password ALICE_PASSWORD and registration enabled with the token.
"""
import asyncio
import sys
import time

from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    LogoutResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPutStateResponse,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
)

ALICE_PASSWORD = "alice's long password"


async def expect(awaitable, kind):
    response = await awaitable
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


def messages_in(response, room_id):
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    return [event.body for event in room.timeline.events if isinstance(event, RoomMessageText)]


async def main(url, token):
    alice = AsyncClient(url, "@alice:localhost")
    bob = AsyncClient(url, "bob")
    try:
        await expect(bob.register_with_token("bob", "bob's long password", token, "nio"), RegisterResponse)
        await expect(alice.login(ALICE_PASSWORD, device_name="alice laptop"), LoginResponse)
        await expect(alice.set_displayname("Alice"), ProfileSetDisplayNameResponse)

        created = await expect(
            alice.room_create(name="Family", topic="Dinner", invite=["@bob:localhost"]), RoomCreateResponse
        )
        room = created.room_id
        first = await expect(bob.sync(timeout=0), SyncResponse)
        assert room in first.rooms.invite, f"bob sees the invite: {first.rooms.invite}"
        await expect(bob.join(room), JoinResponse)
        await expect(alice.sync(timeout=0), SyncResponse)
        bob_since = (await expect(bob.sync(timeout=0), SyncResponse)).next_batch

        await expect(alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "dinner at 7?"}), RoomSendResponse)
        got = await expect(bob.sync(timeout=0, since=bob_since), SyncResponse)
        assert messages_in(got, room) == ["dinner at 7?"], messages_in(got, room)
        again = await expect(bob.sync(timeout=0, since=got.next_batch), SyncResponse)
        assert messages_in(again, room) == [], "no duplicates"

        # A waiting sync wakes up as soon as a message arrives.
        waiting = asyncio.create_task(bob.sync(timeout=20000, since=again.next_batch))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await expect(alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "or 8?"}), RoomSendResponse)
        woken = await waiting
        assert isinstance(woken, SyncResponse), woken
        assert time.monotonic() - started < 5, "the long-poll woke promptly"
        assert messages_in(woken, room) == ["or 8?"], messages_in(woken, room)
        last_event = woken.rooms.join[room].timeline.events[-1].event_id

        await expect(alice.room_typing(room, True, timeout=30000), RoomTypingResponse)
        typing = await expect(bob.sync(timeout=5000, since=woken.next_batch), SyncResponse)
        notices = [e for e in typing.rooms.join[room].ephemeral if isinstance(e, TypingNoticeEvent)]
        assert notices and notices[0].users == ["@alice:localhost"], typing.rooms.join[room].ephemeral

        await expect(bob.room_read_markers(room, last_event, last_event), RoomReadMarkersResponse)
        seen = await expect(alice.sync(timeout=0), SyncResponse)
        receipts = [e for e in seen.rooms.join[room].ephemeral if isinstance(e, ReceiptEvent)]
        readers = {r.user_id for e in receipts for r in e.receipts if r.event_id == last_event}
        assert "@bob:localhost" in readers, receipts

        await expect(alice.room_put_state(room, "m.room.topic", {"topic": "Lunch instead"}), RoomPutStateResponse)
        topic = await expect(bob.room_get_state_event(room, "m.room.topic"), RoomGetStateEventResponse)
        assert topic.content["topic"] == "Lunch instead", topic.content
        name = await expect(bob.get_displayname("@alice:localhost"), ProfileGetDisplayNameResponse)
        assert name.displayname == "Alice", name

        history = await expect(bob.room_messages(room, start=woken.next_batch, limit=50), RoomMessagesResponse)
        bodies = [e.body for e in history.chunk if isinstance(e, RoomMessageText)]
        assert bodies == ["or 8?", "dinner at 7?"], bodies

        await expect(alice.logout(), LogoutResponse)
        await expect(bob.logout(), LogoutResponse)
        print("matrix-nio conversation: register, login, profile, create, invite, join, send, sync, "
              "long-poll, typing, receipts, state, pagination, logout: ok")
    finally:
        await alice.close()
        await bob.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
