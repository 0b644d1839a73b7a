"""A key backup made and used with real end-to-end crypto (vodozemac, the library under
Element's and matrix-rust-sdk's encryption), as a client does it:

1. device A sends a megolm-encrypted message into an encrypted room, creates a backup
   version (`m.megolm_backup.v1.curve25519-aes-sha2`) and backs the session key up,
   encrypted to the backup's public key;
2. device B, a new login that never saw the session, reads the backup, decrypts the key
   with the backup's private key (what a user enters as the recovery key), and decrypts
   the message from the room's history.

The server sees only ciphertext; the test checks it hands back exactly what was stored.

usage: vodozemac_key_backup.py HOMESERVER_URL PASSWORD   (for @alice:localhost)
"""
import json
import sys
import urllib.parse
import urllib.request

import vodozemac

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"


def call(url, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def login(url, password, device):
    return call(url, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": password,
        "device_id": device,
    })["access_token"]


def quote(text):
    return urllib.parse.quote(text, safe="")


def main(url, password):
    # Device A: an encrypted room and a message in it.
    token_a = login(url, password, "DEVICEA")
    room = call(url, "POST", "/_matrix/client/v3/createRoom", token_a, {
        "initial_state": [{
            "type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"},
        }],
    })["room_id"]
    identity = vodozemac.Account()
    outbound = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(outbound.session_key)
    plaintext = {"type": "m.room.message", "room_id": room,
                 "content": {"msgtype": "m.text", "body": "history worth keeping"}}
    ciphertext = outbound.encrypt(json.dumps(plaintext).encode())
    sender_key = identity.curve25519_key.to_base64()
    call(url, "PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.encrypted/txn1",
         token_a, {
             "algorithm": "m.megolm.v1.aes-sha2", "sender_key": sender_key,
             "ciphertext": ciphertext.to_base64(), "session_id": outbound.session_id,
             "device_id": "DEVICEA",
         })

    # Device A backs the session key up, encrypted to the backup's public key.
    backup_key = vodozemac.PkDecryption()
    version = call(url, "POST", "/_matrix/client/v3/room_keys/version", token_a, {
        "algorithm": ALGORITHM,
        "auth_data": {"public_key": backup_key.public_key.to_base64()},
    })["version"]
    session_data = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": sender_key,
        "session_key": inbound.export_at(inbound.first_known_index).to_base64(),
        "sender_claimed_keys": {"ed25519": identity.ed25519_key.to_base64()},
        "forwarding_curve25519_key_chain": [],
    }
    public_key = vodozemac.Curve25519PublicKey.from_base64(
        call(url, "GET", "/_matrix/client/v3/room_keys/version", token_a)["auth_data"]["public_key"])
    ephemeral, mac, encrypted = vodozemac.PkEncryption.from_key(public_key).encrypt(
        json.dumps(session_data).encode()).to_base64()
    stored = {
        "first_message_index": inbound.first_known_index,
        "forwarded_count": 0,
        "is_verified": True,
        "session_data": {"ephemeral": ephemeral, "mac": mac, "ciphertext": encrypted},
    }
    answer = call(url, "PUT",
                  f"/_matrix/client/v3/room_keys/keys/{quote(room)}/{quote(outbound.session_id)}"
                  f"?version={version}", token_a, stored)
    assert answer["count"] == 1, answer

    # Device B: a new login, with only the recovery key (the backup's private key).
    recovery_key = backup_key.key.to_base64()
    token_b = login(url, password, "DEVICEB")
    current = call(url, "GET", "/_matrix/client/v3/room_keys/version", token_b)
    assert current["version"] == version and current["count"] == 1, current
    restored_key = vodozemac.PkDecryption.from_key(
        vodozemac.Curve25519SecretKey.from_base64(recovery_key))
    assert restored_key.public_key.to_base64() == current["auth_data"]["public_key"]
    backup = call(url, "GET", f"/_matrix/client/v3/room_keys/keys?version={version}", token_b)
    backed_up = backup["rooms"][room]["sessions"][outbound.session_id]
    assert backed_up == stored, (backed_up, stored)
    data = backed_up["session_data"]
    decrypted = json.loads(restored_key.decrypt(vodozemac.Message.from_base64(
        data["ciphertext"], data["mac"], data["ephemeral"])))
    session = vodozemac.InboundGroupSession.import_session(
        vodozemac.ExportedSessionKey(decrypted["session_key"]))
    assert session.session_id == outbound.session_id

    # ... and reads the room's history with it.
    messages = call(url, "GET",
                    f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=50", token_b)
    encrypted_events = [e for e in messages["chunk"] if e["type"] == "m.room.encrypted"]
    assert len(encrypted_events) == 1, messages
    event = encrypted_events[0]["content"]
    assert event["session_id"] == outbound.session_id
    clear = session.decrypt(vodozemac.MegolmMessage.from_base64(event["ciphertext"]))
    assert json.loads(clear.plaintext)["content"]["body"] == "history worth keeping", clear
    print("device B decrypted the history from the backup")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
