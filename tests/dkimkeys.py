"""A DKIM key pair for tests, messages signed with it, and a DNS answer that publishes it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "mg2025"


@dataclass(frozen=True)
class KeyPair:
    """An RSA key: the PEM dkimpy signs with, and the TXT record that publishes it."""

    private_pem: bytes
    txt_record: bytes


@cache
def key_pair() -> KeyPair:
    """One 2048-bit key per test session (generation is the slow part)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private_pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der))


def sign(raw: bytes, domain: str, selector: str = SELECTOR, *, length: bool = False) -> bytes:
    """The message with a DKIM-Signature of the domain prepended (relaxed/relaxed; with an l=
    body length tag when asked)."""
    signature = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key_pair().private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        length=length,
    )
    return bytes(signature) + raw


@dataclass
class FakeDns:
    """dkimpy's TXT lookup answered from a table; records every name asked for."""

    records: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    failure: Callable[[], Exception] | None = None

    def publish(self, domain: str, selector: str = SELECTOR) -> FakeDns:
        """Publish the test key for a domain and selector."""
        self.records[f"{selector}._domainkey.{domain}."] = key_pair().txt_record
        return self

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        """The TXT record of the name, or None (NXDOMAIN); raises the failure when set."""
        self.asked.append(name.decode())
        if self.failure is not None:
            raise self.failure()
        return self.records.get(name.decode())
