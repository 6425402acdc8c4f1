"""The line in front of the API: first come, first served, and everyone is told their place."""

import asyncio

from bot.queue import OnWait, WorkQueue


async def test_waiters_learn_their_place_and_go_in_order() -> None:
    queue = WorkQueue(slots=1)
    release = {"a": asyncio.Event(), "b": asyncio.Event(), "c": asyncio.Event()}
    places: dict[str, list[int]] = {"b": [], "c": []}
    order: list[str] = []

    async def job(name: str) -> None:
        async def on_wait(place: int) -> None:
            places[name].append(place)

        async with queue.turn(on_wait):
            order.append(name)
            await release[name].wait()

    first = asyncio.create_task(job("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(job("b"))
    await asyncio.sleep(0.01)
    third = asyncio.create_task(job("c"))
    await asyncio.sleep(0.01)
    assert order == ["a"]
    assert places == {"b": [1], "c": [2]}
    release["a"].set()
    await asyncio.sleep(0.01)
    assert order == ["a", "b"]
    assert places["c"] == [2, 1]  # moved up when "a" finished
    release["b"].set()
    release["c"].set()
    await asyncio.gather(first, second, third)
    assert order == ["a", "b", "c"]


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    queue = WorkQueue(slots=1)
    release = asyncio.Event()
    places: list[int] = []

    async def holder() -> None:
        async with queue.turn():
            await release.wait()

    async def waiter() -> None:
        async with queue.turn():
            pass

    async def last() -> None:
        async def on_wait(place: int) -> None:
            places.append(place)

        async with queue.turn(on_wait):
            pass

    hold = asyncio.create_task(holder())
    await asyncio.sleep(0)
    doomed = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    tail = asyncio.create_task(last())
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.sleep(0.01)
    assert queue.waiting == 1
    release.set()
    await asyncio.gather(hold, tail)
    assert places == [2, 1]


async def test_a_slow_place_report_holds_up_no_one() -> None:
    queue = WorkQueue(slots=2)
    release = asyncio.Event()
    report_stuck = asyncio.Event()
    started: list[str] = []

    async def holder() -> None:
        async with queue.turn():
            await release.wait()

    async def slow_reporter(place: int) -> None:
        await report_stuck.wait()  # e.g. a chat API under a flood wait

    async def job(name: str, on_wait: OnWait | None = None) -> None:
        async with queue.turn(on_wait):
            started.append(name)

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    await asyncio.sleep(0)
    head = asyncio.create_task(job("head", slow_reporter))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(job("second"))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(second, 1)  # both slots freed: "second" runs though "head" is stuck
    assert "second" in started
    report_stuck.set()
    await asyncio.gather(head, *holders)
    assert sorted(started) == ["head", "second"]
