#!/usr/bin/env python3
"""Independent verifier for mycel membership credentials (W3C VC 1.1 as VC-JWT, EdDSA).

Reads one VC-JWT on stdin, resolves the issuer's did:key by hand (no DID library), verifies the
JWS signature with PyJWT + cryptography, checks `exp`/`nbf` against the current time and that the
credential is a MembershipCredential, then prints the decoded VC (VC-JWT claims folded back into
the credential) as JSON on stdout.

Exit status: 0 valid, 1 invalid, 2 missing Python dependencies.
Needs: pip install 'pyjwt[crypto]'   (PyJWT >= 2, cryptography)
Usage: mycel-wallet credential show ... | python3 scripts/verify_credential.py
"""
import json
import sys
from datetime import datetime, timezone

try:
    import jwt  # PyJWT
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as exc:  # pragma: no cover
    print(f"missing dependency: {exc} (pip install 'pyjwt[crypto]')", file=sys.stderr)
    sys.exit(2)

MAX_JWT_LEN = 16 * 1024
CREDENTIALS_V1 = "https://www.w3.org/2018/credentials/v1"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(text: str) -> bytes:
    """base58btc (Bitcoin alphabet) decoding."""
    number = 0
    for char in text:
        index = B58.find(char)
        if index < 0:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + index
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + body


def resolve_did_key(did: str) -> Ed25519PublicKey:
    """did:key:z<base58btc(0xed 0x01 || 32-byte Ed25519 key)> -> public key."""
    prefix = "did:key:z"
    if not did.startswith(prefix):
        raise ValueError(f"not a base58btc did:key: {did}")
    data = b58decode(did[len(prefix):])
    if len(data) != 34 or data[:2] != b"\xed\x01":
        raise ValueError("did:key is not an Ed25519 key (multicodec 0xed01)")
    return Ed25519PublicKey.from_public_bytes(data[2:])


def iso(seconds) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify(token: str) -> dict:
    if len(token) > MAX_JWT_LEN:
        raise ValueError("credential too long")
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "EdDSA":
        raise ValueError(f"unexpected alg {header.get('alg')!r}")
    kid = header.get("kid") or ""
    did, _, fragment = kid.partition("#")
    if fragment != did[len("did:key:"):]:
        raise ValueError(f"kid {kid!r} is not did:key:<key>#<key>")
    key = resolve_did_key(did)
    # Signature, iss, exp and nbf (against the current time, no leeway) are checked by PyJWT.
    claims = jwt.decode(
        token,
        key=key,
        algorithms=["EdDSA"],
        issuer=did,
        options={"require": ["iss", "sub", "nbf", "exp", "vc"], "verify_signature": True},
    )
    vc = dict(claims["vc"])
    contexts = vc.get("@context") or []
    types = vc.get("type") or []
    if not contexts or contexts[0] != CREDENTIALS_V1:
        raise ValueError("first @context is not the VC 1.1 context")
    if "VerifiableCredential" not in types or "MembershipCredential" not in types:
        raise ValueError(f"unexpected type {types!r}")
    subject = dict(vc.get("credentialSubject") or {})
    if not isinstance(subject.get("memberOf"), str) or not subject["memberOf"]:
        raise ValueError("credentialSubject.memberOf missing")
    # VC-JWT decoding (VC Data Model 1.1 section 6.3.1): fold the registered claims back in.
    for prop, value in (("issuer", claims["iss"]), ("issuanceDate", iso(claims["nbf"])),
                        ("expirationDate", iso(claims["exp"]))):
        if prop in vc and vc[prop] != value:
            raise ValueError(f"vc.{prop} disagrees with the JWT claims")
        vc[prop] = value
    if subject.get("id", claims["sub"]) != claims["sub"]:
        raise ValueError("credentialSubject.id disagrees with sub")
    subject["id"] = claims["sub"]
    vc["credentialSubject"] = subject
    if "jti" in claims:
        vc["id"] = claims["jti"]
    return vc


def main() -> int:
    token = sys.stdin.read().strip()
    try:
        vc = verify(token)
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        print(f"INVALID: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(vc, indent=2, sort_keys=True))
    print(f"VALID: {vc['credentialSubject']['id']} is a member of "
          f"{vc['credentialSubject']['memberOf']!r}, issued by {vc['issuer']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
