"""Device keys driven by matrix-nio with its `e2e` extra (vodozemac): a real Olm account
uploads its identity, one-time and fallback keys, another user's client queries them, checks
their signatures and opens an Olm session with a claimed one-time key.

usage: nio_e2ee_keys.py HOMESERVER_URL REGISTRATION_TOKEN
Expects @alice:localhost with password ALICE_PASSWORD, and registration enabled with the token.
"""
import asyncio
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    SyncResponse,
)
from nio.store import SqliteMemoryStore

ALICE_PASSWORD = "alice's long password"


async def expect(awaitable, kind):
    response = await awaitable
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


def client(url, user, store):
    config = AsyncClientConfig(encryption_enabled=True, store=SqliteMemoryStore)
    return AsyncClient(url, user, store_path=store, config=config)


async def main(url, registration_token):
    store = tempfile.mkdtemp()
    clients = []
    try:
        bob = client(url, "bob", store)
        clients.append(bob)
        await expect(
            bob.register_with_token("bob", "bob's long password", registration_token, "nio bob"),
            RegisterResponse,
        )
        alice = client(url, "@alice:localhost", store)
        clients.append(alice)
        await expect(alice.login(ALICE_PASSWORD, device_name="nio alice"), LoginResponse)

        # The first sync tells each client it has no one-time keys: it uploads its own.
        for who in (alice, bob):
            await expect(who.sync(timeout=0, full_state=True), SyncResponse)
            assert who.should_upload_keys, "a new device must want to upload keys"
            uploaded = await expect(who.keys_upload(), KeysUploadResponse)
            assert uploaded.signed_curve25519_count > 0, uploaded
            await expect(who.sync(timeout=0), SyncResponse)
            assert not who.should_upload_keys, "the server's counts did not reach the client"

        # An encrypted room both are in, so each client tracks the other's devices.
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
        await expect(bob.join(room.room_id), JoinResponse)
        await expect(alice.sync(timeout=0), SyncResponse)

        # Alice's client fetches Bob's device keys and checks their signature itself.
        await expect(alice.keys_query(), KeysQueryResponse)
        device = alice.device_store[bob.user_id][bob.device_id]
        assert device.ed25519 == bob.olm.account.identity_keys["ed25519"], device
        assert device.curve25519 == bob.olm.account.identity_keys["curve25519"], device

        # It claims a one-time key (signature checked by the library) and opens a session.
        before = bob.olm.uploaded_key_count
        await expect(alice.keys_claim({bob.user_id: [bob.device_id]}), KeysClaimResponse)
        sessions = alice.olm.session_store[device.curve25519]
        assert sessions, "no Olm session was made from the claimed key"
        await expect(bob.sync(timeout=0), SyncResponse)
        assert bob.olm.uploaded_key_count == before - 1, (before, bob.olm.uploaded_key_count)
        print("ok: keys uploaded, queried, verified and claimed by matrix-nio (vodozemac)")
    finally:
        for each in clients:
            await each.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
