"""In-process stand-ins for Modal's cloud objects: Dict, Queue, Volume, FunctionCall.

Modal's cloud cannot be reached from the tests or from a laptop, so the Modal
layer (`store`, `executor`, `storage`, `gpu`) is run against these: the local
run of the Modal API (`local.py`) and the tests hand them over where the Modal
app hands over `modal.Dict.from_name(...)` and friends. They follow the
documented semantics of the real objects, and the method names and
signatures of the installed `modal` package (1.6), sync and `.aio` alike:

- `DictStandIn`: `get/put(skip_if_exists)/pop/contains/len/update/clear/keys/
  values/items`; values are stored serialized, so a value read back is a copy.
- `QueueStandIn`: FIFO partitions (key 1-64 bytes), `get` and `get_many`
  remove what they return, `block=True` waits up to `timeout` and then raises
  the stdlib's `queue.Empty`, `block=False` answers None / [] at once; at most
  5,000 items per partition (`queue.Full`) and 1 MiB per item
  (`modal.exception.RequestSizeError`). Partition TTLs are not modelled.
- `VolumeStandIn` / `VolumeMount`: a durable copy of the volume (`remote`) and
  one view per container (`mount(path)`, the container's mount point). A
  writer's changes stay in its own view until `commit()`; other writers'
  committed changes appear only after `reload()`, which keeps this view's
  uncommitted changes and fails with `RuntimeError` while files of the view
  are open, as Modal's does. Last write wins per file.
- `FunctionStandIn` / `FunctionCallStandIn`: `spawn` runs the coroutine
  function as a task, with at most `max_concurrent` running (Modal's
  containers times inputs; the rest wait, "pending"). `get(timeout=0)` raises
  the builtin `TimeoutError` while the call has not finished; a call that
  ran past `timeout` raises `modal.exception.FunctionTimeoutError`; the
  function's own exception is raised as it was. `cancel()` cancels the task
  (an async Modal input is cancelled the same way); `get` then raises
  `modal.exception.RemoteError`, which is what the client makes of the
  TERMINATED result a cancelled input leaves (`_process_result` in modal's
  `_utils/function_utils.py`).

Blocking `.aio` waits never hold a thread: they wait on futures that the
other side wakes with `call_soon_threadsafe`, so many readers can block at
once. The sync methods may be called from any thread but the one running
the event loop they would wait for.
"""

from .common import modal_error
from .dicts import DictStandIn
from .functions import FunctionCallStandIn, FunctionStandIn
from .queues import QueueStandIn
from .volumes import VolumeMount, VolumeStandIn

__all__ = ["DictStandIn", "FunctionCallStandIn", "FunctionStandIn", "QueueStandIn",
           "VolumeMount", "VolumeStandIn", "modal_error"]
