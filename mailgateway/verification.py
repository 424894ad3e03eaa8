"""Custom from addresses: a one-time code mailed to the address, confirmed by an operator;
codes are stored hashed (scrypt), expire, and are used once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta
from email.utils import make_msgid

from mailgateway.config import Config
from mailgateway.domain import OutboundKind
from mailgateway.errors import RefusedError
from mailgateway.outbound import render
from mailgateway.store.outbound import OutboundStore, Outgoing
from mailgateway.store.repo import Store
from mailgateway.store.schema import utcnow

CODE_LIFETIME = timedelta(hours=1)
CODE_DIGITS = 6
MAX_WRONG_CODES = 5
# scrypt makes trying every 6-digit code against a stolen hash take hours, longer than a code lives.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def custom_addresses(config: Config) -> dict[str, str]:
    """Every custom from address of the account (lower-cased) and the first inbox using it."""
    found: dict[str, str] = {}
    for inbox in config.inboxes.values():
        address = inbox.fallback_email.from_address
        if address != "default":
            found.setdefault(address.lower(), inbox.slug)
    return found


def new_code() -> str:
    """A random code of CODE_DIGITS digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _derive(address: str, code: str, salt: bytes) -> bytes:
    """The scrypt hash of a code for an address."""
    secret = f"{address.lower()}\x00{code.strip()}".encode()
    return hashlib.scrypt(secret, salt=salt, dklen=32, **SCRYPT)


def hash_code(address: str, code: str) -> str:
    """ "scrypt$<salt>$<hash>", with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = _derive(address, code, salt)
    return "scrypt$" + "$".join(base64.b64encode(v).decode() for v in (salt, digest))


def code_matches(stored: str, address: str, code: str) -> bool:
    """Whether the code is the one hashed in `stored` (compared in constant time)."""
    scheme, _, rest = stored.partition("$")
    salt_text, _, digest_text = rest.partition("$")
    if scheme != "scrypt" or not digest_text:
        return False
    salt, digest = base64.b64decode(salt_text), base64.b64decode(digest_text)
    return hmac.compare_digest(_derive(address, code, salt), digest)


def require_custom(config: Config, address: str) -> str:
    """The address, lower-cased, if an inbox uses it as its custom from address."""
    if address.lower() not in custom_addresses(config):
        msg = f"{address} is not the custom from address of any inbox"
        raise RefusedError(msg)
    return address.lower()


def code_notice(config: Config, address: str, code: str) -> render.Notice:
    """The mail that carries the code."""
    account = config.gateway.account
    minutes = int(CODE_LIFETIME.total_seconds() // 60)
    text = (
        f"Someone asked to send {account.company_name}'s conversation replies from {address}.\n\n"
        f"Verification code: {code}\n\n"
        f"It is valid for {minutes} minutes and can be used once. If you did not expect this\n"
        "message, ignore it: nothing is sent from this address without the code.\n"
    )
    return render.Notice(
        from_name=account.company_name,
        from_address=f"no-reply@{account.from_domain}",
        to=address,
        subject=f"Verification code for sending from {address}",
        text=text,
        message_id=make_msgid(domain=account.local_domain),
        date=utcnow(),
    )


async def request_code(config: Config, store: Store, address: str) -> int | None:
    """Mail a new code to the address through the outbound queue (any older code stops
    working); returns the queue row, or None when the address is verified already."""
    address = require_custom(config, address)
    outbound = OutboundStore(store.engine)
    if await outbound.is_verified(address):
        return None
    code = new_code()
    data = render.to_bytes(render.render_notice(code_notice(config, address, code)))
    outgoing = Outgoing(
        data=data,
        kind=OutboundKind.VERIFICATION,
        mail_from="",
        rcpt_to=(address,),
        sensitive=True,
    )
    expires = utcnow() + CODE_LIFETIME
    return await outbound.set_code(address, hash_code(address, code), expires, outgoing)


async def confirm_code(config: Config, store: Store, address: str, code: str) -> None:
    """Mark the address verified if the code is right, unexpired and unused; else refuse."""
    address = require_custom(config, address)
    outbound = OutboundStore(store.engine)
    pending = await outbound.pending_code(address)
    if pending is None:
        msg = f"no code is pending for {address}: run `mailgateway from-address verify {address}`"
        raise RefusedError(msg)
    if utcnow() >= pending.expires_at:
        msg = f"the code for {address} has expired: request a new one"
        raise RefusedError(msg)
    if not code_matches(pending.code_hash, address, code):
        revoke = pending.attempts + 1 >= MAX_WRONG_CODES
        await outbound.code_failed(address, revoke=revoke)
        more = ": too many tries, request a new one" if revoke else ""
        msg = f"wrong code for {address}{more}"
        raise RefusedError(msg)
    if not await outbound.mark_verified(address, pending.code_hash):
        msg = f"the code for {address} was used already"
        raise RefusedError(msg)
