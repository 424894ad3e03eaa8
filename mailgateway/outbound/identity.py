"""Who a reply is from (pure): may the user and the channel send, from which name and address,
with which signature."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from mailgateway.access import is_member, require_member
from mailgateway.config import (
    ChannelConfig,
    ChannelStatus,
    Config,
    FallbackEmailConfig,
    FromNameMode,
    InboxConfig,
    Role,
    SignatureFormat,
    UserConfig,
)
from mailgateway.errors import RefusedError

FALLBACK_CHANNEL = "fallback_email"
SMARTHOST = "smarthost"
_TOKEN = re.compile(r"\{\{\s*(full_name|first_name|last_name)\s*\}\}")
_BLOCKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
_HIDDEN = frozenset({"script", "style", "head", "title"})


@dataclass(frozen=True, slots=True)
class Signature:
    """The team signature with the agent's names filled in, as plain text and as HTML."""

    text: str
    html: str


@dataclass(frozen=True, slots=True)
class Sender:
    """How a reply leaves: its From, the route, and whether the address must be verified."""

    name: str
    address: str
    transport: str
    custom_address: bool
    signature: Signature


def from_name(fallback: FallbackEmailConfig, user: UserConfig) -> str:
    """ "Alice Nowak from Acme" (agent_and_company) or "Acme" (company)."""
    if fallback.from_name is FromNameMode.COMPANY:
        return fallback.from_company
    return f"{user.full_name} from {fallback.from_company}"


def from_address(config: Config, fallback: FallbackEmailConfig, user: UserConfig) -> str:
    """The configured custom address, or <user id>@<subdomain>.<domain of the plan>."""
    if fallback.from_address != "default":
        return fallback.from_address
    return f"{user.id}@{config.gateway.account.from_domain}"


def fill_tokens(template: str, user: UserConfig, *, escape: bool) -> str:
    """The template with {{ full_name }}, {{ first_name }}, {{ last_name }} replaced."""
    names = {
        "full_name": user.full_name,
        "first_name": user.first_name,
        "last_name": user.last_name,
    }

    def value(match: re.Match[str]) -> str:
        name = names[match.group(1)]
        return html.escape(name) if escape else name

    return _TOKEN.sub(value, template)


def render_signature(fallback: FallbackEmailConfig, user: UserConfig) -> Signature:
    """The inbox's signature for this agent; a text signature gets an HTML twin and the other
    way round."""
    if not fallback.signature.strip():
        return Signature("", "")
    if fallback.signature_format is SignatureFormat.HTML:
        markup = fill_tokens(fallback.signature, user, escape=True)
        return Signature(html_to_text(markup), markup)
    text = fill_tokens(fallback.signature, user, escape=False)
    return Signature(text, "<br>\n".join(html.escape(line) for line in text.splitlines()))


class _TextExtractor(HTMLParser):
    """Collects the visible text of HTML, with line breaks where blocks end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """Readable plain text of a small HTML fragment (a signature)."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    lines = [line.strip() for line in "".join(extractor.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def require_may_reply(config: Config, inbox: InboxConfig, user_id: str) -> UserConfig:
    """The acting user, if they may reply in the inbox; view-only admins are refused by name."""
    user = config.users.get(user_id)
    if user is not None and user.role is not Role.MEMBER and not is_member(config, inbox, user_id):
        msg = f"user {user_id!r} can only view inbox {inbox.slug!r} (not a member): reply refused"
        raise RefusedError(msg)
    require_member(config, inbox.slug, user_id)
    assert user is not None
    return user


def team_channel(inbox: InboxConfig, address: str) -> ChannelConfig | None:
    """The inbox's team email channel with this address, if any."""
    wanted = address.lower()
    return next((c for c in inbox.channels if c.address.lower() == wanted), None)


def sender_for(config: Config, inbox: InboxConfig, channel: str, user: UserConfig) -> Sender:
    """How a reply from this user in this conversation's channel leaves, or a refusal saying
    why it cannot (sending off, channel disabled)."""
    fallback = inbox.fallback_email
    signature = render_signature(fallback, user)
    name = from_name(fallback, user)
    if channel != FALLBACK_CHANNEL:
        team = team_channel(inbox, channel)
        if team is None:
            msg = f"channel {channel} is no longer connected to inbox {inbox.slug!r}"
            raise RefusedError(msg)
        if team.status is ChannelStatus.DISABLED:
            msg = f"channel {team.address} of inbox {inbox.slug!r} is disabled: it cannot send"
            raise RefusedError(msg)
        return Sender(name, team.address, team.address, False, signature)
    if fallback.status is ChannelStatus.DISABLED:
        msg = f"the fallback email of inbox {inbox.slug!r} is disabled: it cannot send"
        raise RefusedError(msg)
    if not fallback.send_enabled:
        msg = f"sending from the fallback email of inbox {inbox.slug!r} is switched off"
        raise RefusedError(msg)
    address = from_address(config, fallback, user)
    return Sender(name, address, SMARTHOST, fallback.from_address != "default", signature)


def preview_sender(config: Config, inbox: InboxConfig, user: UserConfig) -> Sender:
    """What a reply from the inbox's fallback email would look like, even while sending is off."""
    fallback = inbox.fallback_email
    return Sender(
        from_name(fallback, user),
        from_address(config, fallback, user),
        SMARTHOST,
        fallback.from_address != "default",
        render_signature(fallback, user),
    )


def reply_address(inbox: InboxConfig, reply_token: str) -> str:
    """The conversation's Reply-To: <local>+<reply token>@<forwarding domain>."""
    local, _, domain = inbox.fallback_email.forwarding_address.rpartition("@")
    return f"{local}+{reply_token}@{domain}"
