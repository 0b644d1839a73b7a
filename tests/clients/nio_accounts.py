"""Accounts and sessions driven by matrix-nio, a client library nobody here wrote.

usage: nio_accounts.py HOMESERVER_URL REGISTRATION_TOKEN
Expects @alice:localhost with password ALICE_PASSWORD, and registration enabled with the token.
"""
import asyncio
import sys

from nio import (
    AsyncClient,
    DeleteDevicesAuthResponse,
    DeleteDevicesResponse,
    DevicesResponse,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    UpdateDeviceResponse,
    WhoamiResponse,
)

ALICE_PASSWORD = "alice's long password"


async def expect(awaitable, kind):
    response = await awaitable
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


async def main(url, registration_token):
    clients = []
    try:
        # Registration with a token: the library runs the user-interactive auth itself.
        bob = AsyncClient(url, "bob")
        clients.append(bob)
        registered = await expect(
            bob.register_with_token("bob", "bob's long password", registration_token, "nio"),
            RegisterResponse,
        )
        assert registered.user_id == "@bob:localhost", registered.user_id

        alice = AsyncClient(url, "@alice:localhost")
        clients.append(alice)
        await expect(alice.login(ALICE_PASSWORD, device_name="nio laptop"), LoginResponse)
        me = await expect(alice.whoami(), WhoamiResponse)
        assert me.user_id == "@alice:localhost" and me.device_id == alice.device_id

        await expect(alice.update_device(alice.device_id, {"display_name": "renamed"}), UpdateDeviceResponse)
        devices = await expect(alice.devices(), DevicesResponse)
        names = {device.id: device.display_name for device in devices.devices}
        assert names[alice.device_id] == "renamed", names

        phone = AsyncClient(url, "@alice:localhost")
        clients.append(phone)
        await expect(phone.login(ALICE_PASSWORD, device_name="nio phone"), LoginResponse)
        challenge = await expect(alice.delete_devices([phone.device_id]), DeleteDevicesAuthResponse)
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": ALICE_PASSWORD,
            "session": challenge.session,
        }
        await expect(alice.delete_devices([phone.device_id], auth), DeleteDevicesResponse)
        devices = await expect(alice.devices(), DevicesResponse)
        assert [device.id for device in devices.devices] == [alice.device_id], devices.devices

        await expect(alice.logout(), LogoutResponse)
        after = await alice.whoami()
        assert not isinstance(after, WhoamiResponse), "the token still works after logout"
        print("matrix-nio: register with token, login, whoami, devices, delete with auth, logout: ok")
    finally:
        for client in clients:
            await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
