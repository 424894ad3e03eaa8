"""DKIM: signing outgoing mail with dkimpy (off the event loop), and making signing keys."""

from __future__ import annotations

import asyncio
import base64
import enum
import os
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailgateway.config import GATEWAY_FILE, OutboundConfig
from mailgateway.errors import ConfigError, PermanentError

RSA_BITS = 2048
DNS_STRING_LIMIT = 255
# Signed once, and "oversigned" (listed once more) so no copy can be added after signing.
OVERSIGNED = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
)
SIGNED = (*OVERSIGNED, "mime-version", "content-type", "auto-submitted")


class Algorithm(enum.StrEnum):
    """The key types `dkim keygen` makes and the signer accepts."""

    RSA = "rsa"
    ED25519 = "ed25519"


class SigningError(PermanentError):
    """The message could not be signed; it is held, never sent unsigned."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key in the form dkimpy signs with, and its public half for DNS."""

    algorithm: Algorithm
    private: bytes = field(repr=False)
    public: bytes

    @property
    def signature_algorithm(self) -> bytes:
        """The DKIM a= value."""
        return b"rsa-sha256" if self.algorithm is Algorithm.RSA else b"ed25519-sha256"


def _from_private(key: object) -> DkimKey:
    """A DkimKey from a cryptography private key object."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_BITS:
            msg = f"RSA key of {key.key_size} bits: use at least {RSA_BITS}"
            raise ValueError(msg)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(Algorithm.RSA, private, public)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return DkimKey(Algorithm.ED25519, base64.b64encode(raw), public)
    msg = "not an RSA or Ed25519 private key"
    raise ValueError(msg)


def parse_key(data: bytes) -> DkimKey:
    """A key from PEM (PKCS#1 or PKCS#8, RSA or Ed25519) or dkimpy's base64 Ed25519 seed."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        return _from_private(serialization.load_pem_private_key(text, password=None))
    seed = base64.b64decode(text, validate=True)
    if len(seed) != 32:
        msg = "neither a PEM key nor a base64 Ed25519 seed"
        raise ValueError(msg)
    return _from_private(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def generate_key(algorithm: Algorithm) -> tuple[bytes, DkimKey]:
    """A new key: the PEM text to store and the parsed key."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is Algorithm.RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem_format = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        pem_format = serialization.PrivateFormat.PKCS8
    pem = private.private_bytes(
        serialization.Encoding.PEM, pem_format, serialization.NoEncryption()
    )
    return pem, _from_private(private)


def write_key_file(path: Path, pem: bytes) -> None:
    """Write a new key file readable by its owner only (mode 0600); an existing file is never
    replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def txt_value(key: DkimKey) -> str:
    """The TXT record's value: v=DKIM1; k=...; p=..."""
    public = base64.b64encode(key.public).decode("ascii")
    return f"v=DKIM1; k={key.algorithm}; p={public}"


def dns_record(selector: str, domain: str, key: DkimKey) -> str:
    """A zone-file line publishing the public key (long values split into 255-byte strings)."""
    value = txt_value(key)
    chunks = [value[i : i + DNS_STRING_LIMIT] for i in range(0, len(value), DNS_STRING_LIMIT)]
    strings = " ".join(f'"{chunk}"' for chunk in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def from_domain(data: bytes) -> str:
    """The domain of the message's From address."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
    addresses: tuple[Any, ...] = getattr(headers["from"], "addresses", ())
    domains = [str(address.domain).lower() for address in addresses if address.domain]
    if len(addresses) != 1 or len(domains) != 1:
        msg = "the message has no single From address to sign for"
        raise SigningError(msg)
    return domains[0]


class Signer:
    """Adds a DKIM-Signature to outgoing messages (relaxed/relaxed, no l=, From and the other
    singleton headers oversigned)."""

    def __init__(self, key: DkimKey, selector: str, domain: str = "") -> None:
        self.key = key
        self.selector = selector
        self.domain = domain

    def sign_now(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header first; SigningError on any failure."""
        domain = self.domain or from_domain(data)
        try:
            signature: bytes = dkim.sign(
                data,
                self.selector.encode("ascii"),
                domain.encode("ascii"),
                self.key.private,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[name.encode() for name in (*SIGNED, *OVERSIGNED)],
                length=False,
                signature_algorithm=self.key.signature_algorithm,
            )
        except Exception as error:  # dkimpy raises many types: all mean "not signed"
            msg = f"DKIM signing failed: {type(error).__name__}: {error}"
            raise SigningError(msg) from error
        if not signature.startswith(b"DKIM-Signature:"):
            msg = "DKIM signing produced no signature"
            raise SigningError(msg)
        return signature + data

    async def sign(self, data: bytes) -> bytes:
        """Sign in a worker thread (RSA is CPU work that would stall the event loop)."""
        return await asyncio.to_thread(self.sign_now, data)


def load_signer(settings: OutboundConfig) -> Signer | None:
    """The signer of the configured key, None when signing is not configured; a key that
    cannot be read or parsed is a ConfigError naming outbound.dkim_key."""
    if not settings.dkim_key:
        return None
    try:
        key = parse_key(Path(settings.dkim_key).read_bytes())
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
        problem = f"unusable DKIM key: {error}"
        raise ConfigError(GATEWAY_FILE, "outbound.dkim_key", problem) from None
    return Signer(key, settings.dkim_selector, settings.dkim_domain)
