"""A consumer that finds nothing asks the broker less often (`KAFKA_FETCH_IDLE_WAIT_MS`).

The local broker holds every fetch for the whole fetch wait, data or not (docs/platform-notes.md), so the wait is
how often a consumer asks. At 20 ms an idle stack spent half a core asking (each service ~6 %, the broker ~24 %).
Apache Kafka answers a fetch as soon as data is there, so there a long wait costs nothing; on the local broker it
is added to every hop.

Pacing doubles a consumer's wait after each fetch that brought no records, up to the idle wait, and goes back to
the short wait with the first fetch that brings some. A flow keeps every hop at the short wait (so under load
nothing changes); a quiet consumer asks a tenth as often; the first message after a quiet spell waits up to the
idle wait at each hop.

aiokafka offers no hook for this, so the consumer's fetcher (private, aiokafka pinned in uv.lock) is wrapped;
shared/tests/test_fetch_pacing.py checks it against the real client and broker.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)


def pace_fetches(consumer: AIOKafkaConsumer, busy_wait_ms: int, idle_wait_ms: int) -> bool:
    """Pace a started consumer's fetches between the two waits. False (and the wait stays as it is) when
    `idle_wait_ms` is not longer than `busy_wait_ms`, or when the client is not the one this knows."""
    if idle_wait_ms <= busy_wait_ms:
        return False
    fetcher: Any = getattr(consumer, "_fetcher", None)
    fetch = getattr(fetcher, "_proc_fetch_request", None)
    if fetch is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
        log.warning("this aiokafka's consumer cannot be paced: every fetch waits %d ms, busy or idle", busy_wait_ms)
        return False

    async def paced(*args: Any) -> bool:
        found: bool = await fetch(*args)  # True when the response added records
        fetcher._fetch_max_wait_ms = busy_wait_ms if found else min(2 * fetcher._fetch_max_wait_ms, idle_wait_ms)
        return found

    fetcher._proc_fetch_request = paced
    return True
