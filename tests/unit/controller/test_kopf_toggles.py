"""Kopf's start-up gate with one shared waiter: the same answers, and work linear in the objects listed."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from datasweep.controller import _kopf_toggles


def test_waiters_are_released_only_when_every_toggle_is_dropped_and_checks_stay_linear() -> None:
    assert _kopf_toggles.install()
    checks = 0

    def all_on(states: object) -> bool:
        nonlocal checks
        checks += 1
        return all(states)  # type: ignore[call-overload]

    async def scenario(objects: int) -> None:
        gate = aiotoggles.ToggleSet(all_on)
        toggles = [await gate.make_toggle(name=str(i)) for i in range(objects)]
        released: list[int] = []

        async def worker(index: int) -> None:
            await gate.wait_for(True)
            released.append(index)

        workers = [asyncio.create_task(worker(i)) for i in range(objects)]
        for toggle in toggles[:-1]:  # as Kopf's workers do once their object is indexed, other work between
            await gate.drop_toggle(toggle)
            await asyncio.sleep(0.0005)
        assert released == []  # one object still unindexed: nobody may run
        await gate.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
        assert sorted(released) == list(range(objects))
        await gate.wait_for(True)  # already on: returns at once

    asyncio.run(scenario(1000))
    # Kopf's own wait re-checks the set in every waiter on every change: objects² = 1,000,000 checks (measured).
    assert checks < 10 * 1000, checks


def test_a_paused_set_is_waited_off_and_on_again() -> None:
    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)
        peer = await paused.make_toggle(True, name="peer")
        resumed = asyncio.create_task(paused.wait_for(False))
        await asyncio.sleep(0.01)
        assert not resumed.done()
        await peer.turn_to(False)
        await asyncio.wait_for(resumed, timeout=5)
        again = asyncio.create_task(paused.wait_for(True))
        await asyncio.sleep(0.01)
        assert not again.done()
        await peer.turn_to(True)
        await asyncio.wait_for(again, timeout=5)

    asyncio.run(scenario())
