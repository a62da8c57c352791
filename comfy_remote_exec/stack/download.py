"""Download a stack's models onto a volume, resumably and verified.

Model files are many gigabytes and the network volume outlives any one
worker, so a download must survive being cut off: each file is written to
`<name>.part`, resumed with an HTTP `Range` request, checked against the
stack's size and sha256, and only then renamed into place. A file under its
final name is therefore complete; it is skipped on the next run.

A gated model's token is read from the environment variable the stack names
and sent only as a bearer header; it is never printed (httpx drops it on a
redirect to another host, such as Hugging Face's CDN). `parallel` fetches
several models at once (threads over one httpx client, which is thread-safe);
each file is still one stream, so a resume never has two writers.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
from tqdm import tqdm

from ..errors import RemoteExecError
from ..fsutil import file_sha256, human_size
from .spec import Model, Stack, StackError


class DownloadError(RemoteExecError):
    code = "download_failed"
    status = 502


class Progress(Protocol):
    def update(self, name: str, done: int, total: int | None) -> None: ...

    def finish(self, name: str, done: int, note: str) -> None: ...


@dataclass(frozen=True)
class Downloaded:
    model: Model
    path: Path
    status: str  # "present", "downloaded" or "resumed"
    fetched: int  # bytes transferred by this call


def download_models(stack: Stack, volume_dir: str | os.PathLike[str],
                    client: httpx.Client | None = None, progress: Progress | None = None, *,
                    only: Iterable[str] | None = None, verify_existing: bool = False,
                    attempts: int = 3, sleep: Callable[[float], None] = time.sleep,
                    parallel: int = 1,
                    on_done: Callable[[Downloaded], None] | None = None,
                    ) -> list[Downloaded]:
    """Fetch each model (or those in `only`) to `volume_dir/models/<folder>/<name>`.

    `progress` None draws a text bar on stderr. `verify_existing` re-hashes
    files already in place instead of trusting their size. `parallel` models
    are fetched at once; `on_done` hears of each one in place (a Modal Volume
    commits there, so an interrupted fill keeps what it finished). A failed
    model does not stop the others; the failures are raised together at the end.
    Results are in stack order.
    """
    models = stack.select(only) if only else stack.models
    unknown = [m.relpath for m in models if m.url is None]
    if unknown:
        raise StackError("no download URL for " + ", ".join(unknown) + " (needs_url in the "
                         "stack file): add their url, or leave them out with --only")
    bar = progress if progress is not None else TextBar()
    http = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=20.0))

    def one(model: Model) -> Downloaded | DownloadError:
        try:
            result = download_model(model, volume_dir, http, bar,
                                    verify_existing=verify_existing,
                                    attempts=attempts, sleep=sleep)
        except DownloadError as exc:
            return exc
        if on_done is not None:
            on_done(result)
        return result

    try:
        if parallel <= 1 or len(models) <= 1:
            results = [one(model) for model in models]
        else:
            with ThreadPoolExecutor(max_workers=parallel,
                                    thread_name_prefix="stack-download") as pool:
                results = list(pool.map(one, models))
    finally:
        if client is None:
            http.close()
    done = [r for r in results if isinstance(r, Downloaded)]
    failed = [r for r in results if isinstance(r, DownloadError)]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise DownloadError(f"{len(failed)} models failed:\n"
                            + "\n".join(f"  {e.message}" for e in failed),
                            retryable=any(e.retryable for e in failed))
    return done


def download_model(model: Model, volume_dir: str | os.PathLike[str], client: httpx.Client,
                   progress: Progress, *, verify_existing: bool = False, attempts: int = 3,
                   sleep: Callable[[float], None] = time.sleep) -> Downloaded:
    final = model.path(volume_dir)
    if final.is_file() and _in_place(model, final, verify_existing):
        progress.finish(model.name, final.stat().st_size, "already present")
        return Downloaded(model, final, "present", 0)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    if model.token_env and not os.environ.get(model.token_env):
        print(f"note: {model.token_env} is not set; {model.name} is gated and may be refused",
              file=sys.stderr, flush=True)
    fetched = 0
    digest = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            digest, got = _fetch(model, part, client, progress)
            fetched += got
            break
        except OSError as exc:
            raise DownloadError(f"{model.name}: cannot write {part}: {exc}") from exc
        except httpx.TransportError as exc:
            kept = part.stat().st_size if part.is_file() else 0
            if attempt >= attempts:
                raise DownloadError(
                    f"{model.name}: download interrupted ({type(exc).__name__}) with "
                    f"{kept} bytes in {part.name}; run again to resume",
                    retryable=True) from exc
            sleep(min(30.0, 2.0 ** attempt))
    _check(model, part, digest)
    os.replace(part, final)
    size = final.stat().st_size
    status = "resumed" if fetched < size else "downloaded"
    progress.finish(model.name, size, status)
    return Downloaded(model, final, status, fetched)


def _in_place(model: Model, path: Path, verify: bool) -> bool:
    if model.size is not None and path.stat().st_size != model.size:
        return False
    if verify and model.sha256:
        return file_sha256(path).hexdigest() == model.sha256
    return True


def _fetch(model: Model, part: Path, client: httpx.Client,
           progress: Progress) -> tuple[hashlib._Hash | None, int]:
    """Continue `part` from its current length; return its running hash and the bytes added."""
    offset = part.stat().st_size if part.is_file() else 0
    if model.size is not None and offset > model.size:
        part.unlink()
        offset = 0
    hasher = file_sha256(part) if model.sha256 and offset else (
        hashlib.sha256() if model.sha256 else None)
    if model.size is not None and offset == model.size:
        return hasher, 0
    if model.url is None:
        raise DownloadError(f"{model.name}: no download URL (needs_url in the stack file)")
    headers = {"Accept-Encoding": "identity", **_auth(model)}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", model.url, headers=headers, follow_redirects=True) as resp:
        if offset and resp.status_code in (206, 416):
            if resp.status_code == 206 and _range_start(resp) == offset:
                mode = "ab"
            elif _range_total(resp.headers.get("content-range")) == offset:
                return hasher, 0  # 416: the part already holds the whole file
            else:
                resp.close()
                part.unlink()
                return _fetch(model, part, client, progress)
        elif resp.status_code == 200:
            # no Range was asked, or the server ignored it: start over
            mode, offset = "wb", 0
            hasher = hashlib.sha256() if model.sha256 else None
        else:
            raise _http_error(model, resp)
        length = resp.headers.get("content-length", "")
        total = offset + int(length) if length.isdigit() else model.size
        done = offset
        progress.update(model.name, done, total)
        with part.open(mode) as fh:
            for chunk in resp.iter_bytes():  # as received: a chunk buffer would die with a cut
                fh.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                done += len(chunk)
                progress.update(model.name, done, total)
    return hasher, done - offset


def _check(model: Model, part: Path, digest: hashlib._Hash | None) -> None:
    size = part.stat().st_size
    if model.size is not None and size != model.size:
        part.unlink()
        raise DownloadError(f"{model.name}: got {size} bytes, the stack says {model.size}; "
                            "the partial file was removed", retryable=True)
    if model.sha256 and digest is not None and digest.hexdigest() != model.sha256:
        part.unlink()
        raise DownloadError(f"{model.name}: sha256 {digest.hexdigest()} does not match the "
                            f"stack's {model.sha256}; the partial file was removed")


def _auth(model: Model) -> dict[str, str]:
    token = os.environ.get(model.token_env, "").strip() if model.token_env else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _http_error(model: Model, resp: httpx.Response) -> DownloadError:
    code = resp.status_code
    message = f"{model.name}: HTTP {code} from {model.url}"
    if code in (401, 403) and model.token_env:
        if os.environ.get(model.token_env):
            message += (f"; the token in {model.token_env} was refused: check that it can "
                        "read this repository and that its licence was accepted")
        else:
            message += f"; it is gated: set {model.token_env} to a token that can read it"
    return DownloadError(message, retryable=code >= 500 or code in (408, 429))


def _range_start(resp: httpx.Response) -> int | None:
    value = resp.headers.get("content-range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(value: str | None) -> int | None:
    try:
        return int((value or "").rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


class TextBar:
    """Progress on stderr with tqdm: one bar per file, redrawn in place on a terminal,
    a line now and then in logs (tqdm's own `mininterval`)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bars: dict[str, tqdm[Any]] = {}
        self._lock = threading.Lock()  # parallel downloads report from their threads

    def update(self, name: str, done: int, total: int | None) -> None:
        with self._lock:
            bar = self._bars.get(name)
            if bar is None:
                bar = self._bars[name] = tqdm(
                    desc=name, total=total, initial=done, unit="B", unit_scale=True,
                    unit_divisor=1024, file=self.stream, dynamic_ncols=self.tty,
                    mininterval=0.2 if self.tty else 10.0, leave=False)
            bar.total = total
            bar.update(done - bar.n)

    def finish(self, name: str, done: int, note: str) -> None:
        with self._lock:
            bar = self._bars.pop(name, None)
            if bar is not None:
                bar.close()
            self.stream.write(f"{name}: {note} ({human_size(done)})\n")
            self.stream.flush()
