"""The web URL of the deployed Modal app's API function: asked of Modal once, then cached.

`python launcher/launch.py --backend modal` without `--url` needs the URL
Modal gave the app's API (`https://<workspace>--<label>.modal.run`, or its
custom domain). Modal's SDK knows it: `modal.Function.from_name(app, name)`, or
for a class's web method (`Cls.method`, as `deploy/modal/app.py` registers
`API.serve`) `modal.Cls.from_name(app, Cls)().method`, then `.get_web_url()`,
with the token `modal token new` saved. The answer is cached in the platformdirs cache
folder (`REMOTE_EXEC_CACHE_DIR` overrides it), keyed by the app's name, so
the next start, and the extension when no URL is set, need neither Modal's
SDK nor its cloud.

Standard library only, with `modal` (and `platformdirs`) imported lazily: the
launcher runs this before any dependency is installed, and the extension
works without Modal's SDK. The resolver is injectable, so tests run without
Modal's cloud. `python -m comfy_remote_exec.modal_url` prints the URL (the
launcher runs it with ComfyUI's Python when its own has no `modal`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

APP = "comfy-remote-exec"  # this package's platformdirs name
DEFAULT_APP = "comfy-remote-exec"  # the Modal app's name, as deployed
DEFAULT_FUNCTION = "API.serve"  # its web method that serves the job API (`Cls.method`)
APP_ENV, FUNCTION_ENV, CACHE_ENV = ("REMOTE_EXEC_MODAL_APP", "REMOTE_EXEC_MODAL_FUNCTION",
                                    "REMOTE_EXEC_CACHE_DIR")
CACHE_FILE = "modal_urls.json"
HOW = "run `pip install modal` and `modal token new`, or pass --url"
TIMEOUT = 60.0

Resolver = Callable[[str, str], str | None]


class ModalUrlError(Exception):
    """No URL: why, and what to do. `no_sdk`: Modal's SDK is not installed here."""

    def __init__(self, message: str, *, no_sdk: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.no_sdk = no_sdk


def names(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The app and function to look for (`REMOTE_EXEC_MODAL_APP`, `..._FUNCTION`)."""
    env = os.environ if env is None else env
    return env.get(APP_ENV) or DEFAULT_APP, env.get(FUNCTION_ENV) or DEFAULT_FUNCTION


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    try:
        import platformdirs
    except ImportError:  # the launcher's bare Python: platformdirs' answer, by hand
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Caches" / APP
        if os.name == "nt":
            return Path(os.environ.get("LOCALAPPDATA", Path.home())) / APP / APP / "Cache"
        return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / APP
    return Path(platformdirs.user_cache_dir(APP))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(app: str, function: str, env: Mapping[str, str] | None = None) -> str | None:
    """The URL found earlier for `function` of `app`, if any."""
    entry = _read(cache_dir(env) / CACHE_FILE).get(app)
    if isinstance(entry, dict) and entry.get("function") == function:
        url = entry.get("url")
        return url if isinstance(url, str) and url else None
    return None


def remember(app: str, function: str, url: str, env: Mapping[str, str] | None = None) -> None:
    folder = cache_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    data = _read(folder / CACHE_FILE)
    data[app] = {"function": function, "url": url, "found_at": int(time.time())}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{CACHE_FILE}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, folder / CACHE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def modal_resolver(app: str, function: str) -> str | None:
    """Ask Modal (its SDK, the saved token) for the function's web URL."""
    try:
        import modal
        import modal.exception
    except ImportError:
        raise ModalUrlError(f"Modal's SDK is not installed: {HOW}", no_sdk=True) from None
    try:
        cls_name, _, method = function.partition(".")
        web = (getattr(modal.Cls.from_name(app, cls_name)(), method) if method
               else modal.Function.from_name(app, function))
        url = web.get_web_url()
    except modal.exception.AuthError:
        raise ModalUrlError(f"Modal has no token on this machine: {HOW}") from None
    except modal.exception.NotFoundError:
        raise ModalUrlError(f"Modal has no function {function!r} in a deployed app {app!r}: "
                            "deploy the app (README, Modal), name yours with --modal-app "
                            "and --modal-function, or pass --url") from None
    except modal.exception.Error as exc:
        raise ModalUrlError(f"Modal could not tell the URL of {app}/{function} ({exc}); "
                            f"{HOW}") from None
    return str(url) if url else None


def _within(resolver: Resolver, app: str, function: str, timeout: float) -> str | None:
    """The resolver's answer, or an error after `timeout` s (Modal's SDK retries an
    unreachable cloud for long); its thread is a daemon, left to end on its own."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["url"] = resolver(app, function)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="modal-url")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ModalUrlError(f"Modal did not answer within {timeout:.0f} s; pass --url")
    if "error" in box:
        raise box["error"]
    url = box.get("url")
    return url if isinstance(url, str) else None


def find_url(app: str = DEFAULT_APP, function: str = DEFAULT_FUNCTION, *,
             resolver: Resolver | None = None, refresh: bool = False,
             env: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """The cached URL, else the resolver's (Modal's, by default), then cached."""
    if not refresh and (url := cached(app, function, env)):
        return url
    url = _within(resolver or modal_resolver, app, function, timeout)
    if not url:
        raise ModalUrlError(f"{app}/{function} is not a web function on Modal: the job API "
                            "is served by the app's web function; name it with "
                            "--modal-function, or pass --url")
    remember(app, function, url, env)
    return url


def main(argv: list[str] | None = None) -> int:
    app, function = names()
    parser = argparse.ArgumentParser(prog="python -m comfy_remote_exec.modal_url",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--app", default=app, help=f"the Modal app ({app})")
    parser.add_argument("--function", default=function, help=f"its web function ({function})")
    parser.add_argument("--refresh", action="store_true", help="ask Modal, not the cache")
    args = parser.parse_args(argv)
    try:
        print(find_url(args.app, args.function, refresh=args.refresh))
    except ModalUrlError as exc:
        print(exc.message, file=sys.stderr)
        return 3 if exc.no_sdk else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
