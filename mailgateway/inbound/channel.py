"""Which channel of its inbox a queued message came in on, and whether that channel is enabled
(pure): mail of a disabled channel is neither shown in the inbox nor logged on contacts."""

from __future__ import annotations

from dataclasses import dataclass

from mailgateway.config import ChannelStatus, InboxConfig

FALLBACK_EMAIL = "fallback_email"
IMAP_SOURCE = "imap"


@dataclass(frozen=True, slots=True)
class IncomingChannel:
    """A channel as the worker sees it: its kind, address and status."""

    kind: str
    address: str
    status: ChannelStatus

    @property
    def enabled(self) -> bool:
        """Whether mail of this channel is shown and logged."""
        return self.status is ChannelStatus.ENABLED


def incoming_channel(inbox: InboxConfig, source: str, rcpt_to: str) -> IncomingChannel:
    """The team email channel whose address a message fetched by IMAP was for; otherwise (SMTP
    intake, or a channel no longer configured) the inbox's fallback email."""
    if source == IMAP_SOURCE:
        for channel in inbox.channels:
            if channel.address.lower() == rcpt_to.strip().lower():
                return IncomingChannel(str(channel.type), channel.address, channel.status)
    fallback = inbox.fallback_email
    return IncomingChannel(FALLBACK_EMAIL, fallback.forwarding_address, fallback.status)
