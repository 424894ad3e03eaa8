"""DKIM keys and signing (outbound/sign.py): key formats, signatures dkimpy verifies, refusals."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailgateway.config import OutboundConfig
from mailgateway.errors import ConfigError
from mailgateway.outbound import sign
from tests.support import make_message

MESSAGE = make_message(sender="Alice <alice@acme.example>", In_Reply_To="<a@x>")


def verifies(data: bytes, key: sign.DkimKey) -> bool:
    """Whether dkimpy verifies the data with the key's public half answered as DNS."""
    record = sign.txt_value(key).encode()
    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: record))


@pytest.mark.parametrize("algorithm", list(sign.Algorithm))
def test_generated_key_round_trips_and_signs(algorithm: sign.Algorithm) -> None:
    """A generated key parses back to itself and its signatures verify; tampering fails."""
    pem, key = sign.generate_key(algorithm)
    assert sign.parse_key(pem) == key
    signed = sign.Signer(key, "mg1").sign_now(MESSAGE)
    assert verifies(signed, key)
    assert not verifies(signed.replace(b"Printer on fire", b"Printer is fine"), key)


def test_rsa_keys_are_2048_bits() -> None:
    """RSA keys are generated with 2048 bits; shorter ones are refused when loaded."""
    pem, _ = sign.generate_key(sign.Algorithm.RSA)
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.key_size == 2048
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="at least 2048"):
        sign.parse_key(short)


def test_other_key_formats_are_accepted() -> None:
    """PKCS#8 RSA (openssl genpkey) and dkimpy's base64 Ed25519 seed load and sign."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = sign.parse_key(pkcs8)
    assert verifies(sign.Signer(key, "s").sign_now(MESSAGE), key)
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    ed_key = sign.parse_key(base64.b64encode(seed) + b"\n")
    assert ed_key.algorithm is sign.Algorithm.ED25519
    assert verifies(sign.Signer(ed_key, "s").sign_now(MESSAGE), ed_key)


@pytest.mark.parametrize("data", [b"", b"garbage!", b"-----BEGIN RSA PRIVATE KEY-----\nxx\n"])
def test_unparsable_keys_are_refused(data: bytes) -> None:
    """Anything that is not a usable key raises ValueError."""
    with pytest.raises(ValueError):
        sign.parse_key(data)


def test_signature_tags() -> None:
    """The signature is relaxed/relaxed, signed for the From domain, oversigns every singleton
    header and has no l= tag."""
    _, key = sign.generate_key(sign.Algorithm.RSA)
    header = sign.Signer(key, "mg1").sign_now(MESSAGE).split(b"\r\nFrom:")[0].decode()
    tags = {
        name.strip(): value.strip()
        for name, _, value in (part.partition("=") for part in "".join(header.split()).split(";"))
    }
    assert tags["DKIM-Signature:v"] == "1"
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == (
        "rsa-sha256",
        "relaxed/relaxed",
        "acme.example",
        "mg1",
    )
    assert "l" not in tags
    signed = tags["h"].split(":")
    for name in sign.OVERSIGNED:
        assert signed.count(name) == 2, name


def test_configured_signing_domain_wins() -> None:
    """dkim_domain, when set, is the d= of every signature."""
    _, key = sign.generate_key(sign.Algorithm.ED25519)
    signed = sign.Signer(key, "mg1", "mail.acme.test").sign_now(MESSAGE)
    assert b"d=mail.acme.test;" in signed and verifies(signed, key)


def test_signing_failures_raise_signing_error() -> None:
    """A broken key or a message without a single From address is a SigningError."""
    _, key = sign.generate_key(sign.Algorithm.RSA)
    broken = sign.Signer(sign.DkimKey(sign.Algorithm.RSA, b"junk", b""), "mg1")
    with pytest.raises(sign.SigningError, match="DKIM signing failed"):
        broken.sign_now(MESSAGE)
    with pytest.raises(sign.SigningError, match="single From"):
        sign.Signer(key, "mg1").sign_now(b"Subject: no sender\r\n\r\nbody\r\n")


async def test_async_sign_matches() -> None:
    """Signing off the event loop gives a signature that verifies."""
    _, key = sign.generate_key(sign.Algorithm.RSA)
    assert verifies(await sign.Signer(key, "mg1").sign(MESSAGE), key)


def test_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    """Key files are created 0600 in a 0700 folder, and an existing file is not overwritten."""
    path = tmp_path / "dkim" / "k.key"
    sign.write_key_file(path, b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(FileExistsError):
        sign.write_key_file(path, b"other")
    assert path.read_bytes() == b"secret"


def test_dns_record_splits_long_values() -> None:
    """The TXT record of an RSA key is split into strings of at most 255 characters."""
    _, key = sign.generate_key(sign.Algorithm.RSA)
    record = sign.dns_record("mg1", "acme.example", key)
    strings = record.split('"')[1::2]
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == sign.txt_value(key)


def test_load_signer(tmp_path: Path) -> None:
    """No key configured means no signer; an unusable key file is a ConfigError naming
    outbound.dkim_key; a good one gives a signer with the selector and domain."""
    assert sign.load_signer(OutboundConfig()) is None
    (tmp_path / "bad.key").write_text("nope")
    bad = OutboundConfig.model_validate(
        {"dkim_selector": "mg1", "dkim_key": "bad.key"}, context={"directory": tmp_path}
    )
    with pytest.raises(ConfigError) as error:
        sign.load_signer(bad)
    assert (error.value.file, error.value.key) == ("mailgateway.toml", "outbound.dkim_key")
    pem, key = sign.generate_key(sign.Algorithm.ED25519)
    sign.write_key_file(tmp_path / "good.key", pem)
    good = OutboundConfig.model_validate(
        {"dkim_selector": "mg1", "dkim_key": "good.key", "dkim_domain": "Acme.Example"},
        context={"directory": tmp_path},
    )
    signer = sign.load_signer(good)
    assert signer is not None
    assert (signer.key, signer.selector, signer.domain) == (key, "mg1", "acme.example")
