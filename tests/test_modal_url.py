"""Finding the deployed Modal app's URL: asked once (an injected resolver stands in for
Modal's cloud), then cached by app; clear errors without Modal's SDK or token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from comfy_remote_exec import modal_url
from comfy_remote_exec.modal_url import CACHE_FILE, ModalUrlError, cached, find_url

REPO = Path(__file__).resolve().parents[1]
URL = "https://ws--comfy-remote-exec-api.modal.run"


class Resolver:
    """Stands in for `modal.Function.from_name(app, fn).get_web_url()`; counts calls."""

    def __init__(self, answers: dict[tuple[str, str], str | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def __call__(self, app: str, function: str) -> str | None:
        self.asked.append((app, function))
        return self.answers.get((app, function))


def test_asked_once_then_cached_by_app(tmp_path: Path) -> None:
    env = {"REMOTE_EXEC_CACHE_DIR": str(tmp_path)}
    other = "https://ws--other-api.modal.run"
    resolver = Resolver({("comfy-remote-exec", "API.serve"): URL, ("other", "API.serve"): other,
                         ("comfy-remote-exec", "web"): URL + "/web"})
    assert find_url(resolver=resolver, env=env) == URL
    assert find_url(resolver=resolver, env=env) == URL
    assert resolver.asked == [("comfy-remote-exec", "API.serve")], "the second start asks nobody"
    assert find_url("other", resolver=resolver, env=env) == other
    assert find_url("comfy-remote-exec", "web", resolver=resolver, env=env) == URL + "/web"
    assert len(resolver.asked) == 3, "another app, or another function, is asked for"
    stored = json.loads((tmp_path / CACHE_FILE).read_text())
    assert sorted(stored) == ["comfy-remote-exec", "other"]
    assert stored["other"]["url"] == other and stored["other"]["function"] == "API.serve"
    assert cached("other", "API.serve", env) == other and cached("nobody", "API.serve", env) is None
    assert find_url(refresh=True, resolver=resolver, env=env) == URL
    assert len(resolver.asked) == 4, "--refresh-url asks again"


def test_a_function_that_is_no_web_endpoint(tmp_path: Path) -> None:
    env = {"REMOTE_EXEC_CACHE_DIR": str(tmp_path)}
    with pytest.raises(ModalUrlError, match="not a web function"):
        find_url(resolver=Resolver({}), env=env)
    assert not (tmp_path / CACHE_FILE).exists()


def test_a_resolver_that_never_answers_times_out(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck(app: str, function: str) -> str:
        release.wait(10)
        return URL

    try:
        with pytest.raises(ModalUrlError, match="did not answer"):
            find_url(resolver=stuck, env={"REMOTE_EXEC_CACHE_DIR": str(tmp_path)},
                     timeout=0.2)
    finally:
        release.set()


def test_the_cache_folder_without_platformdirs_is_platformdirs_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's bare Python and the extension find the same cache."""
    import platformdirs
    expected = Path(platformdirs.user_cache_dir("comfy-remote-exec"))
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # import fails
    assert modal_url.cache_dir(dict(os.environ, REMOTE_EXEC_CACHE_DIR="")) == expected


def bare_env(tmp_path: Path) -> dict[str, str]:
    """No Modal token anywhere: a fresh HOME, no MODAL_* variables."""
    return {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""),
            "REMOTE_EXEC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}


def test_without_a_modal_token_it_says_what_to_do(tmp_path: Path) -> None:
    """Modal's real SDK, with no token saved (it refuses before any network)."""
    pytest.importorskip("modal")
    out = subprocess.run([sys.executable, "-m", "comfy_remote_exec.modal_url"],
                         capture_output=True, text=True, env=bare_env(tmp_path), timeout=60)
    assert out.returncode == 1
    assert "no token" in out.stderr and "modal token new" in out.stderr
    assert "--url" in out.stderr


def test_without_modals_sdk_it_says_what_to_do(tmp_path: Path) -> None:
    """`-I` with `-S`: only the standard library, as in the launcher's bare Python."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from comfy_remote_exec.modal_url import main; raise SystemExit(main([]))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO)],
                         capture_output=True, text=True, env=bare_env(tmp_path), timeout=60)
    assert out.returncode == 3
    assert "pip install modal" in out.stderr and "modal token new" in out.stderr
