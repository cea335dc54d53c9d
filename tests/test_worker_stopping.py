"""How the worker stops: a cancellation inside the Kafka client's `stop`
(seen when the broker was gone: aiokafka cancels its own fetch task and the
error reaches the caller) must not replace the reason the worker stops, so
that an outage still ends it with exit code 3; a cancellation of the worker's
own task still goes through."""
from __future__ import annotations

import asyncio

import pytest

from accrual.worker import _quietly


async def _cancelled_inside() -> None:
    raise asyncio.CancelledError  # as aiokafka's fetcher.close() lets it out


def test_a_cancellation_inside_a_client_task_is_logged_not_raised(caplog):
    async def stopping() -> str:
        await _quietly(_cancelled_inside())
        return "went on stopping"

    assert asyncio.run(stopping()) == "went on stopping"
    assert "a task of the Kafka client was cancelled" in caplog.text


def test_a_cancellation_of_the_stopping_task_itself_goes_on():
    async def main() -> None:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.sleep(60)

        task = asyncio.create_task(_quietly(slow()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_error_while_stopping_is_logged_not_raised(caplog):
    async def broken() -> None:
        raise RuntimeError("the client failed to close")

    asyncio.run(_quietly(broken()))
    assert "while stopping" in caplog.text and "the client failed to close" in caplog.text
