"""A whole encrypted conversation driven by matrix-nio with its `e2e` extra (vodozemac):
two users in an encrypted room exchange messages both ways and each decrypts the other's;
then the second user logs in a second device, the first user's client learns of it from
`/sync`'s `device_lists.changed` (nothing else tells it), and the new device decrypts the
next message (it was sent the room key).

usage: nio_e2ee_conversation.py HOMESERVER_URL REGISTRATION_TOKEN
Expects @alice:localhost with password ALICE_PASSWORD, and registration enabled with the token.
"""
import asyncio
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.store import SqliteMemoryStore

ALICE_PASSWORD = "alice's long password"
BOB_PASSWORD = "bob's long password"


async def expect(awaitable, kind):
    response = await awaitable
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


def client(url, user):
    config = AsyncClientConfig(encryption_enabled=True, store=SqliteMemoryStore)
    return AsyncClient(url, user, store_path=tempfile.mkdtemp(), config=config)


async def sync(who):
    """One sync, then what a client's sync loop does next: upload keys it lacks on the
    server, and query the devices of users the server said changed."""
    response = await expect(who.sync(timeout=0), SyncResponse)
    if who.should_upload_keys:
        await expect(who.keys_upload(), KeysUploadResponse)
    if who.should_query_keys:
        await expect(who.keys_query(), KeysQueryResponse)
    return response


def texts(response, room_id):
    """The room's messages in a sync response: decrypted ones as text, others as None."""
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    found = []
    for event in room.timeline.events:
        if isinstance(event, RoomMessageText):
            found.append((event.sender, event.body, event.decrypted))
        elif isinstance(event, MegolmEvent):
            found.append((event.sender, None, False))
    return found


async def send(who, room_id, body):
    await expect(
        who.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            ignore_unverified_devices=True,
        ),
        RoomSendResponse,
    )


async def receive(who, room_id, sender, body):
    """Syncs until `body` from `sender` arrives in the room, decrypted (a bounded time)."""
    seen = []
    for _ in range(20):
        response = await sync(who)
        for message in texts(response, room_id):
            seen.append(message)
            if message == (sender, body, True):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{who.user_id}/{who.device_id} never decrypted {body!r}: {seen}")


async def main(url, registration_token):
    clients = []
    try:
        bob = client(url, "bob")
        clients.append(bob)
        await expect(
            bob.register_with_token("bob", BOB_PASSWORD, registration_token, "nio bob"),
            RegisterResponse,
        )
        alice = client(url, "@alice:localhost")
        clients.append(alice)
        await expect(alice.login(ALICE_PASSWORD, device_name="nio alice"), LoginResponse)
        for who in (alice, bob):
            await sync(who)

        room = await expect(
            alice.room_create(
                invite=[bob.user_id],
                initial_state=[
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    }
                ],
            ),
            RoomCreateResponse,
        )
        room_id = room.room_id
        await sync(bob)
        await expect(bob.join(room_id), JoinResponse)
        for who in (alice, bob):
            await sync(who)
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

        # Both ways: each message is encrypted by the sender's client, decrypted by the
        # other's (the server only ever holds ciphertext).
        await send(alice, room_id, "hello bob, only you can read this")
        await receive(bob, room_id, alice.user_id, "hello bob, only you can read this")
        await send(bob, room_id, "hello alice, same here")
        await receive(alice, room_id, bob.user_id, "hello alice, same here")

        # Bob's second device: Alice's client hears of it through device_lists.changed,
        # queries it, and shares the room key with it along with the next message.
        phone = client(url, "@bob:localhost")
        clients.append(phone)
        await expect(phone.login(BOB_PASSWORD, device_name="nio bob phone"), LoginResponse)
        await sync(phone)
        await sync(phone)
        told = False
        for _ in range(20):
            response = await sync(alice)
            told = told or bob.user_id in (response.device_list.changed or [])
            if phone.device_id in alice.device_store[bob.user_id]:
                break
            await asyncio.sleep(0.2)
        assert told, "Bob never in Alice's device_lists.changed"
        assert phone.device_id in alice.device_store[bob.user_id], alice.device_store
        await send(alice, room_id, "for both of bob's devices")
        await receive(phone, room_id, alice.user_id, "for both of bob's devices")
        await receive(bob, room_id, alice.user_id, "for both of bob's devices")
        print("ok: an encrypted conversation with matrix-nio, and a second device got the key")
    finally:
        for each in clients:
            await each.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
