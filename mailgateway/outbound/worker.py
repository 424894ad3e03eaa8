"""The outbound worker: claims queued replies, signs them (DKIM), sends them, and records the
outcome: sent, deferred with exponential backoff, failed (5xx, or given up), or held."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

from mailgateway import metrics
from mailgateway.config import ChannelConfig, ChannelStatus, Config
from mailgateway.domain import OutboundState
from mailgateway.errors import ConfigError, TemporaryError
from mailgateway.inbound.parse import clean_text
from mailgateway.logs import get_logger
from mailgateway.outbound import send
from mailgateway.outbound.identity import SMARTHOST
from mailgateway.outbound.sentcopy import SentCopies, SentCopy
from mailgateway.outbound.sign import Signer, load_signer
from mailgateway.polling import PollingLoop
from mailgateway.store.channelsend import note_copy_failed
from mailgateway.store.claims import claimer_alive
from mailgateway.store.outbound import ClaimedOutbound, OutboundStore
from mailgateway.store.repo import Store
from mailgateway.store.schema import utcnow

log = get_logger(__name__)

COPY_GRACE = 5.0  # seconds copies to Sent folders may still take when the worker stops
REASON_LIMIT = 500
Deliver = Callable[[send.Route, str, Sequence[str], bytes], Awaitable[str]]


def worker_name() -> str:
    """A name unique to this process, recorded on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}/outbound"


def backoff(settings_delay: float, settings_max: float, attempts: int) -> timedelta:
    """retry_delay doubled after every attempt, at most max_retry_delay."""
    exponent = min(max(attempts - 1, 0), 32)
    return timedelta(seconds=min(settings_delay * 2**exponent, settings_max))


class OutboundWorker(PollingLoop):
    """Sends the outbound queue through the smarthost or team SMTP servers until stopped."""

    def __init__(
        self,
        store: Store,
        config: Config,
        signer: Signer | None,
        *,
        deliver: Deliver = send.deliver,
    ) -> None:
        super().__init__()
        self.queue = OutboundStore(store.engine)
        self.config = config
        self.signer = signer
        self.deliver = deliver
        self.name = worker_name()
        self.copies = SentCopies(lambda *failure: note_copy_failed(store, *failure))
        if signer is None:
            log.warning("outbound.unsigned", reason="no [outbound] dkim_key configured")

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded configuration; a DKIM key that no longer loads keeps the old one."""
        try:
            signer = load_signer(config.gateway.outbound)
        except ConfigError as error:
            log.error("outbound.key_reload_refused", error=str(error))
            signer = self.signer
        self.config, self.signer = config, signer

    async def run(self) -> None:
        """Send until stopped, sleeping between empty polls; a database outage is waited out."""
        try:
            await self.queue.requeue_abandoned(partial(claimer_alive, own=self.name))
        except Exception as error:  # the database may be down: the claims' lease covers it
            log.error("outbound.recover_failed", error=type(error).__name__)
        await self.poll_until_stopped()
        await self.queue.release_claims(self.name)
        await self.copies.drain(COPY_GRACE)

    def poll_interval(self) -> float:
        """The workers' configured poll interval."""
        return self.config.gateway.worker.poll_interval

    async def poll(self) -> int:
        """One batch; a database outage is logged and waited out."""
        try:
            return await self.run_once()
        except Exception as error:
            log.error("outbound.poll_failed", error=type(error).__name__)
            return 0

    async def run_once(self) -> int:
        """Claim one batch of due rows and send them; returns how many were handled."""
        batch = await self.queue.claim(self.name, self.config.gateway.worker.batch_size)
        handled = 0
        for item in batch:
            if self.stopping.is_set():
                break
            await self.process(item)
            handled += 1
        return handled

    def route(self, transport: str) -> send.Route:
        """The route of a row: the smarthost, or the team channel it names (still enabled)."""
        gateway = self.config.gateway
        helo = gateway.smtp.hostname
        if transport == SMARTHOST:
            return send.smarthost_route(gateway.outbound, helo)
        channel = self.channel(transport)
        if channel is None:
            msg = f"channel {transport} is not configured"
            raise send.RouteRefused(msg)
        if channel.status is ChannelStatus.DISABLED:
            msg = f"channel {channel.address} is disabled"
            raise send.RouteRefused(msg)
        return send.channel_route(channel.smtp, helo, gateway.outbound.timeout)

    def channel(self, transport: str) -> ChannelConfig | None:
        """The team channel a row's transport names, if it is configured."""
        wanted = transport.lower()
        for inbox in self.config.inboxes.values():
            for channel in inbox.channels:
                if channel.address.lower() == wanted:
                    return channel
        return None

    async def attempt(self, item: ClaimedOutbound) -> tuple[str, bytes]:
        """Sign and send one message; the server's reply and the bytes sent, or the project's
        error."""
        send.check_envelope(item.mail_from, item.rcpt_to)
        route = self.route(item.transport)
        data = item.data if self.signer is None else await self.signer.sign(item.data)
        return await self.deliver(route, item.mail_from, item.rcpt_to, data), data

    async def process(self, item: ClaimedOutbound) -> OutboundState:
        """Send one row and record what became of it; then file a copy of a channel reply in
        the channel's Sent folder (after the row is recorded sent: a copy never resends)."""
        try:
            reply, data = await self.attempt(item)
        except TemporaryError as error:
            return await self._deferred(item, error)
        except send.DeliveryFailed as error:
            return await self._final(item, OutboundState.FAILED, str(error))
        except Exception as error:  # signing, route, envelope or a bug: a human must look
            return await self._final(item, OutboundState.HELD, f"{type(error).__name__}: {error}")
        state = await self._final(item, OutboundState.SENT, reply)
        channel = None if item.transport == SMARTHOST else self.channel(item.transport)
        if channel is not None and channel.sent_folder:
            self.copies.save(SentCopy(item.id, channel, self.config.gateway.imap, data))
        return state

    async def _final(
        self, item: ClaimedOutbound, state: OutboundState, reason: str
    ) -> OutboundState:
        """Sent, failed or held; the bytes of a sent or failed code mail are wiped."""
        text = clean_text(reason, limit=REASON_LIMIT)
        scrub = item.sensitive and state in (OutboundState.SENT, OutboundState.FAILED)
        await self.queue.record(item.id, state, text, scrub=scrub)
        metrics.count_outbound(state)
        event = log.info if state is OutboundState.SENT else log.warning
        event(
            f"outbound.{state}", queue_id=item.id, kind=item.kind, attempt=item.attempts, reply=text
        )
        return state

    async def _deferred(self, item: ClaimedOutbound, error: Exception) -> OutboundState:
        """Try again after the backoff, or fail once the lifetime is over."""
        settings = self.config.gateway.outbound
        now = utcnow()
        if now >= self._deadline(item.queued_at):
            days = settings.give_up_after / 86400
            reason = f"gave up after {item.attempts} attempts in {days:g} days: {error}"
            return await self._final(item, OutboundState.FAILED, reason)
        retry_at = now + backoff(settings.retry_delay, settings.max_retry_delay, item.attempts)
        text = clean_text(str(error), limit=REASON_LIMIT)
        await self.queue.record(item.id, OutboundState.DEFERRED, text, next_attempt_at=retry_at)
        metrics.count_outbound(OutboundState.DEFERRED)
        log.warning(
            "outbound.deferred",
            queue_id=item.id,
            kind=item.kind,
            attempt=item.attempts,
            retry_at=retry_at.isoformat(),
            reply=text,
        )
        return OutboundState.DEFERRED

    def _deadline(self, queued_at: datetime) -> datetime:
        """When retrying stops."""
        return queued_at + timedelta(seconds=self.config.gateway.outbound.give_up_after)
