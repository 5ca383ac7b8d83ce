"""Work that a write of some resource type causes inside the same unit of work (DESIGN.md: a
change and the outbox jobs it causes commit together).

The app wraps its store in a HookedStore: every unit of work it hands out runs the hooks
registered for a type right after each write of that type, on the same backend transaction, so a
hook's own writes (a Task) and jobs (uow.enqueue) commit or vanish with the change that caused
them, and a hook that raises (a prescription that cannot be sent: 422) undoes the write. Types
without hooks cost nothing: no extra read, no proxy call.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from ..storage import StoredVersion, Store, UnitOfWork

WriteHook = Callable[[UnitOfWork, "StoredVersion | None", StoredVersion], Awaitable[None]]
"""(unit of work, the version before the write or None, the version written)"""


class WriteHooks:
    def __init__(self) -> None:
        self._by_type: dict[str, list[WriteHook]] = {}

    def register(self, resource_type: str, hook: WriteHook) -> None:
        self._by_type.setdefault(resource_type, []).append(hook)

    def for_type(self, resource_type: str) -> list[WriteHook]:
        return self._by_type.get(resource_type, [])

    def __bool__(self) -> bool:
        return bool(self._by_type)


class HookedUnitOfWork:
    """A unit of work that runs the write hooks; everything else is the backend's own."""

    def __init__(self, inner: UnitOfWork, hooks: WriteHooks):
        self._inner = inner
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write(self, resource_type: str, id: str, resource: dict, **options: Any) -> StoredVersion:
        hooks = self._hooks.for_type(resource_type)
        previous = await self._inner.read(resource_type, id) if hooks else None
        stored = await self._inner.write(resource_type, id, resource, **options)
        for hook in hooks:
            await hook(self._inner, previous, stored)  # the hook's own writes are not hooked again
        return stored

    async def delete(self, resource_type: str, id: str, **options: Any) -> StoredVersion | None:
        hooks = self._hooks.for_type(resource_type)
        previous = await self._inner.read(resource_type, id) if hooks else None
        marker = await self._inner.delete(resource_type, id, **options)
        if marker is not None:
            for hook in hooks:
                await hook(self._inner, previous, marker)
        return marker


class HookedStore:
    """The app's store: the backend, whose units of work run the write hooks."""

    def __init__(self, inner: Store, hooks: WriteHooks):
        self._inner = inner
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self._inner.unit_of_work() as uow:
            yield HookedUnitOfWork(uow, self._hooks)  # type: ignore[misc]
