"""`FunctionStandIn` and `FunctionCallStandIn`: a Modal Function and its spawned calls.

`spawn` runs the coroutine function as a task on the running loop and hands
back a call with Modal's `object_id`, `get(timeout)` and `cancel()`;
`FunctionCallStandIn.from_id` finds a call again by its id, as
`modal.FunctionCall.from_id` does (see the package's docstring for what
`get` raises when). At most `max_concurrent` calls run at once; the others
wait for a slot, as inputs wait for a container, and a call cancelled while
it waits never runs.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from .common import Both, modal_error


class FunctionCallStandIn:
    """`modal.FunctionCall`, in this process."""

    _calls: ClassVar[dict[str, FunctionCallStandIn]] = {}

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.object_id = f"fc-standin-{uuid.uuid4().hex[:20]}"
        self.task = task
        self.loop = task.get_loop()
        self._done = threading.Event()
        task.add_done_callback(lambda _t: self._done.set())
        FunctionCallStandIn._calls[self.object_id] = self

    @classmethod
    def from_id(cls, function_call_id: str) -> FunctionCallStandIn:
        call = cls._calls.get(function_call_id)
        if call is None:
            raise modal_error("NotFoundError")(f"no function call {function_call_id}")
        return call

    def _result(self) -> Any:
        task = self.task
        if task.cancelled():
            raise modal_error("RemoteError")("the input was cancelled (TERMINATED)")
        error = task.exception()
        if error is not None:
            raise error
        return pickle.loads(pickle.dumps(task.result()))

    def _get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError()
        return self._result()

    async def _get_aio(self, timeout: float | None = None, *, index: int = 0) -> Any:
        if not self.task.done():
            if timeout is not None and timeout <= 0:
                raise TimeoutError()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError() from None
            except BaseException:
                if not self.task.done():
                    raise  # the caller was cancelled, not the call
        return self._result()

    get = Both(_get, _get_aio)

    def _cancel(self, terminate_containers: bool = False) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)

    async def _cancel_aio(self, terminate_containers: bool = False) -> None:
        self._cancel(terminate_containers)

    cancel = Both(_cancel, _cancel_aio)


class FunctionStandIn:
    """A Modal Function whose body is `fn`, run in this process."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], *, max_concurrent: int = 1,
                 timeout: float | None = None) -> None:
        self.fn = fn
        self.timeout = timeout
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self.started = 0  # calls that got a slot and ran

    async def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        async with self._slots:
            self.started += 1
            args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # inputs are serialized
            if self.timeout is None:
                return await self.fn(*args, **kwargs)
            try:
                return await asyncio.wait_for(self.fn(*args, **kwargs), self.timeout)
            except asyncio.TimeoutError:
                raise modal_error("FunctionTimeoutError")(
                    f"the function ran past its {self.timeout} s timeout") from None

    def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCallStandIn:
        # Called on the loop's thread (as the API does), like `asyncio.create_task`.
        return FunctionCallStandIn(asyncio.get_event_loop().create_task(
            self._run(args, kwargs)))

    async def _spawn_aio(self, *args: Any, **kwargs: Any) -> FunctionCallStandIn:
        return FunctionCallStandIn(asyncio.get_running_loop().create_task(
            self._run(args, kwargs)))

    spawn = Both(_spawn, _spawn_aio)

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("FunctionStandIn.remote blocks the loop that runs it; "
                           "use `await f.remote.aio(...)`")

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        return await self._run(args, kwargs)

    remote = Both(_remote, _remote_aio)
