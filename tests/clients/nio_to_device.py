"""matrix-nio sends a to-device message from one of alice's devices to bob's, and bob's
client sees it in its sync exactly once, with the sender, type and content sent.

usage: nio_to_device.py HOMESERVER_URL PASSWORD
"""
import asyncio
import sys

from nio import AsyncClient, LoginResponse, SyncResponse, ToDeviceResponse
from nio.event_builders import ToDeviceMessage


async def logged_in(url, user, password):
    client = AsyncClient(url, f"@{user}:localhost")
    answer = await client.login(password, device_name=f"{user}'s nio")
    assert isinstance(answer, LoginResponse), answer
    return client


async def main(url, password):
    alice = await logged_in(url, "alice", password)
    bob = await logged_in(url, "bob", password)
    try:
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse), first
        message = ToDeviceMessage(
            "org.hearth.test.ping", bob.user_id, bob.device_id, {"ping": 42}
        )
        sent = await alice.to_device(message, tx_id="ping-1")
        assert isinstance(sent, ToDeviceResponse), sent
        # The same transaction again: stored once.
        sent = await alice.to_device(message, tx_id="ping-1")
        assert isinstance(sent, ToDeviceResponse), sent
        seen = []
        for _ in range(5):
            synced = await bob.sync(timeout=1000)
            assert isinstance(synced, SyncResponse), synced
            seen.extend(synced.to_device_events)
            if seen:
                # One more sync acknowledges it; nothing comes again.
                again = await bob.sync(timeout=0)
                assert not again.to_device_events, again.to_device_events
                break
        assert len(seen) == 1, seen
        event = seen[0]
        assert event.sender == alice.user_id, event.sender
        assert event.source["type"] == "org.hearth.test.ping", event.source
        assert event.source["content"] == {"ping": 42}, event.source
    finally:
        await alice.close()
        await bob.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
