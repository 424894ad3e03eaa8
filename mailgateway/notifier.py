"""The notifier: posts queued outbox events to the chat webhook, retrying with backoff."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import aiohttp

from mailgateway.config import NotificationsConfig
from mailgateway.errors import PermanentError, TemporaryError
from mailgateway.logs import get_logger
from mailgateway.notifications import slack_message
from mailgateway.polling import PollingLoop
from mailgateway.store import outbox
from mailgateway.store.claims import claimer_alive
from mailgateway.store.outbox import ClaimedEvent
from mailgateway.store.repo import Store
from mailgateway.store.schema import utcnow

log = get_logger(__name__)

MAX_BACKOFF = 3600.0
BATCH = 20


class WebhookUnavailable(TemporaryError):
    """The webhook could not take the event now (network, timeout, 408, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class WebhookRejected(PermanentError):
    """The webhook refused the event (4xx): retrying the same request will not help."""


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header given in seconds, or None (HTTP dates are ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def backoff(settings: NotificationsConfig, attempts: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: retry_delay doubled per attempt, capped at an hour,
    and never sooner than the webhook's Retry-After."""
    delay = min(settings.retry_delay * 2.0 ** max(attempts - 1, 0), MAX_BACKOFF)
    return max(delay, min(retry_after or 0.0, MAX_BACKOFF))


async def post_event(session: aiohttp.ClientSession, url: str, event: ClaimedEvent) -> None:
    """POST one event as Slack incoming-webhook JSON; aiohttp's faults become ours."""
    try:
        async with session.post(url, json=slack_message(event.kind, event.payload)) as response:
            if response.status < 300:
                return
            if response.status in {408, 429} or response.status >= 500:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise WebhookUnavailable(f"HTTP {response.status}", retry_after)
            raise WebhookRejected(f"HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as error:
        raise WebhookUnavailable(type(error).__name__) from error


class Notifier(PollingLoop):
    """Claims queued notifications and posts them until stopped; idle without a webhook URL."""

    def __init__(
        self, store: Store, settings: NotificationsConfig, *, name: str, poll_interval: float
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.name = f"{name}:notifier"
        self.interval = poll_interval
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Post until stopped, sleeping between empty polls; never crash on a fault."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self._requeue_abandoned()
            self.session = session
            try:
                await self.poll_until_stopped()
            finally:
                self.session = None
        try:
            await outbox.release_claims(self.store.engine, self.name)
        except Exception as error:
            log.error("notifier.release_failed", error=type(error).__name__)

    async def _requeue_abandoned(self) -> None:
        """Queue again at once what a notifier of this host that is gone left mid-post (those of
        other hosts are claimed again when their lease runs out)."""
        try:
            own = partial(claimer_alive, own=self.name)
            await outbox.requeue_abandoned(self.store.engine, own)
        except Exception as error:
            log.error("notifier.requeue_failed", error=type(error).__name__)

    def poll_interval(self) -> float:
        """The configured poll interval."""
        return self.interval

    async def poll(self) -> int:
        """One batch; a database outage is logged and waited out."""
        if self.session is None:
            return 0
        try:
            return await self.run_once(self.session)
        except Exception as error:  # the database may be down: keep polling
            log.error("notifier.poll_failed", error=type(error).__name__)
            return 0

    async def run_once(self, session: aiohttp.ClientSession) -> int:
        """Claim one batch and post it; returns how many events were attempted."""
        url = self.settings.webhook_url
        if not url:
            return 0
        batch = await outbox.claim_events(self.store.engine, self.name, BATCH)
        attempted = 0
        for event in batch:
            if self.stopping.is_set():
                break
            await self.deliver(session, url, event)
            attempted += 1
        return attempted

    async def deliver(self, session: aiohttp.ClientSession, url: str, event: ClaimedEvent) -> None:
        """Post one event and record the outcome: sent, queued for a retry, or failed."""
        engine = self.store.engine
        try:
            await post_event(session, url, event)
        except WebhookUnavailable as error:
            if event.attempts >= self.settings.max_attempts:
                await self._failed(event, f"{error} after {event.attempts} attempts")
                return
            delay = backoff(self.settings, event.attempts, error.retry_after)
            retry_at = utcnow() + timedelta(seconds=delay)
            log.warning(
                "notification.retry", event_id=event.id, attempt=event.attempts, error=str(error)
            )
            await outbox.mark_retry(engine, event.id, str(error), retry_at)
            return
        except WebhookRejected as error:
            await self._failed(event, str(error))
            return
        await outbox.mark_sent(engine, event.id)
        log.info("notification.sent", event_id=event.id, kind=event.kind, attempt=event.attempts)

    async def _failed(self, event: ClaimedEvent, reason: str) -> None:
        """Give up on an event, visibly."""
        log.error("notification.failed", event_id=event.id, kind=event.kind, reason=reason)
        await outbox.mark_failed(self.store.engine, event.id, reason)
