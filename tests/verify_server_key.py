"""Verify a Matrix server's /_matrix/key/v2/server response with Python's `cryptography`.

An Ed25519 implementation independent of the server's: it fetches the response, rebuilds
the canonical JSON the way the spec's appendix shows (json.dumps with sorted keys, compact
separators, UTF-8), and checks every self-signature with every published key.

usage: verify_server_key.py URL SERVER_NAME
"""
import base64
import json
import sys
import time
import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def unpadded_b64decode(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("UTF-8")


def main():
    url, server_name = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["server_name"] == server_name, body["server_name"]
    assert body["valid_until_ts"] > time.time() * 1000, "already expired"
    signatures = body["signatures"][server_name]
    signed = {k: v for k, v in body.items() if k not in ("signatures", "unsigned")}
    message = canonical_json(signed)
    checked = 0
    for key_id, key in body["verify_keys"].items():
        public_key = Ed25519PublicKey.from_public_bytes(unpadded_b64decode(key["key"]))
        public_key.verify(unpadded_b64decode(signatures[key_id]), message)  # raises if invalid
        checked += 1
    assert checked > 0, "no key to check"
    # A tampered response must fail: the check is real.
    tampered = dict(signed, valid_until_ts=signed["valid_until_ts"] + 1)
    key_id, key = next(iter(body["verify_keys"].items()))
    try:
        Ed25519PublicKey.from_public_bytes(unpadded_b64decode(key["key"])).verify(
            unpadded_b64decode(signatures[key_id]), canonical_json(tampered))
    except Exception:
        pass
    else:
        raise AssertionError("a tampered response verified")
    print(f"verified {checked} key(s) of {server_name}")


if __name__ == "__main__":
    main()
