"""The extension's brain: decide remote or local, accept prompts, own the queue.

`RemoteExec.accept()` answers `POST /prompt` exactly as ComfyUI does
(`{prompt_id, number, node_errors}`, or 400 `{error, node_errors}` for a
graph ComfyUI refuses, honouring a client's `prompt_id`, `front`, `number`
and `partial_execution_targets`) when remote mode is on for this request, and
returns None otherwise so ComfyUI handles it untouched. Checks of node types
and model files this machine lacks are left to the remote (`validation`); with
the remote's catalog cached, `preflight` checks them against what the remote
offers before any GPU time, and lists the local models to ship with the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends import registry
from ..backends.base import Backend, Catalog, ModelStore
from ..backends.registry import BackendContext
from ..config import (
    RemoteConfig,
    backend_section,
    config_path,
    load_secrets,
    resolve,
    token_for,
)
from ..errors import ConfigError, RemoteExecError
from ..hashcache import HashCache
from ..protocol import JobTiming
from .catalog import MAX_AGE, RemoteCatalogCache
from .cost import CostLedger, JobCost, price_for
from .dispatcher import Dispatcher
from .host import DEFAULT_USER, Host
from .inputs import InputHasher
from .journal import Journal, RemoteJob
from .preflight import Preflight, conflicts, needs_to_json, preflight
from .validation import lenient

log = logging.getLogger(__name__)

# ComfyUI's `execution.SENSITIVE_EXTRA_DATA_KEYS` (comfy.org credentials for API nodes).
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


def refusal(kind: str, message: str, details: str) -> dict[str, Any]:
    """A prompt-level 400 body in ComfyUI's shape."""
    return {"error": {"type": kind, "message": message, "details": details,
                      "extra_info": {}}, "node_errors": {}}


def remote_override(body: Mapping[str, Any]) -> dict[str, Any]:
    """`extra_data.remote_exec`: a bool, or `{enabled, backend, url}`."""
    extra = body.get("extra_data")
    value = extra.get("remote_exec") if isinstance(extra, dict) else None
    if isinstance(value, bool):
        return {"enabled": value}
    return dict(value) if isinstance(value, dict) else {}


def open_with_viewer(path: Path) -> None:
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        log.warning("could not open %s: %s", path, exc)


class RemoteExec:
    def __init__(self, host: Host, state: Path, env: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.state = state
        self.env = dict(os.environ if env is None else env)
        self.secrets_path = config_path(self.env)
        self.journal = Journal(state / "journal")
        self._warming: asyncio.Task[None] | None = None
        self.backends: dict[tuple[str, str | None, str | None], Backend] = {}
        self.catalogs: dict[tuple[str, str | None], RemoteCatalogCache] = {}
        self.costs = CostLedger()  # this session's GPU seconds and cost
        self.dispatcher = Dispatcher(host, self.journal, self.backend_for,
                                     lambda: self.config().parallel, self._output_landed,
                                     on_timing=self._timed)
        # One hash cache for inputs and models, kept across restarts.
        self.hashes = HashCache(state / "hashes.json")
        self.dispatcher.hasher = InputHasher(self.hashes)
        self._remote_hashes: dict[tuple[str, str, str], str | None] = {}

    # -- configuration ----------------------------------------------------------------

    def config(self, user: str = DEFAULT_USER) -> RemoteConfig:
        """Settings (the user's own in multi-user mode) over env over defaults."""
        return resolve(self.host.settings(user), self.env, load_secrets(self.secrets_path))

    def backend_for(self, job: RemoteJob) -> Backend:
        """The job's backend, with the credential its kind has now (the job may have
        picked another backend than the default, or waited for a restart)."""
        token = token_for(job.backend, self.env, load_secrets(self.secrets_path))
        return self.backend(job.backend, job.url, token)

    def backend(self, name: str, url: str | None, token: str | None) -> Backend:
        """One backend per (kind, endpoint, credential), made on first use.

        Callers pass the credential read just now, so a key fixed in the secrets
        file serves the next Run without a restart.
        """
        key = (name, url, token)
        if key not in self.backends:
            self.backends[key] = self._make_backend(name, url, token)
        return self.backends[key]

    def _make_backend(self, name: str, url: str | None, token: str | None) -> Backend:
        spec = registry.get(name)
        if spec is None:
            raise ConfigError(f"the {name} backend is not available in this version",
                              code="backend_unavailable")
        return spec.factory(BackendContext(
            url=url, token=token, env=self.env, comfyui_root=self.host.comfyui_root,
            state_dir=self.state, comfy_args=tuple(self.host.cache_args()),
            section=backend_section(load_secrets(self.secrets_path), name)))

    def remote_enabled(self, user: str = DEFAULT_USER) -> bool:
        """Whether remote mode is on for this user's requests (a broken config: off)."""
        try:
            return self.config(user).enabled
        except RemoteExecError:
            return False

    def catalog_for(self, user: str = DEFAULT_USER) -> RemoteCatalogCache:
        """The catalog cache of the user's remote (one per backend kind and endpoint)."""
        cfg = self.config(user)
        backend = self.backend(cfg.backend, cfg.url, cfg.token)
        key = (cfg.backend, cfg.url)
        cache = self.catalogs.get(key)
        if cache is None or cache.backend is not backend:  # first use, or a new credential
            name = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
            cache = self.catalogs[key] = RemoteCatalogCache(
                backend, self.state / "catalog" / f"{name}.json",
                max_age=backend.catalog_max_age if isinstance(backend, Catalog) else MAX_AGE)
        return cache

    def _output_landed(self, entry: dict[str, Any]) -> None:
        if self.env.get("REMOTE_EXEC_OPEN_RESULTS", "") in ("1", "true", "yes"):
            folder = self.host.output_dir / entry.get("subfolder", "")
            open_with_viewer(folder / entry["filename"])

    def _timed(self, job: RemoteJob, timing: JobTiming) -> None:
        """A job's GPU seconds arrived: price them, add them up, tell its client."""
        try:
            prices = load_secrets(self.secrets_path).get("prices")
        except ConfigError as exc:
            log.warning("no prices: %s", exc.message)
            prices = None
        cost = JobCost(timing, price_for(job.backend, prices))
        job.cost = cost.to_dict()
        self.costs.add(job.backend, cost)
        self.host.send("remote_exec.cost", {"prompt_id": job.prompt_id, "status": job.status,
                                            **job.cost,
                                            "session": self.costs.view()}, job.client_id)

    # -- prompts ------------------------------------------------------------------------

    async def accept(self, body: Any, user: str = DEFAULT_USER
                     ) -> tuple[int, dict[str, Any]] | None:
        """`(status, answer)` for a prompt taken remote, or None to let ComfyUI run it.

        Step by step what ComfyUI's `post_prompt` does: on-prompt handlers, the
        queue number, the prompt id, ComfyUI's own validation (see
        `validation.lenient` for the checks left to the remote), `extra_data`
        with `client_id` and `create_time`, sensitive keys kept out of the queue.
        """
        if not isinstance(body, dict):
            return None
        override = remote_override(body)
        cfg = self.config(user)
        if not override.get("enabled", cfg.enabled):
            return None
        body = self.host.on_prompt(body)
        number: float | int
        if "number" in body:
            number = float(body["number"])
        else:
            number = self.host.next_number(bool(body.get("front")))
        prompt = body.get("prompt")
        if prompt is None:
            return 400, refusal("no_prompt", "No prompt provided", "No prompt provided")
        if not isinstance(prompt, dict) or not all(isinstance(n, dict)
                                                   for n in prompt.values()):
            return 400, refusal("invalid_prompt", "The prompt is not a valid API-format "
                                "workflow", "every node must be an object")
        if body.get("prompt_id") is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                prompt_id = self.host.check_prompt_id(body["prompt_id"])
            except ValueError:
                return 400, refusal("invalid_prompt_id", "prompt_id must be a valid UUID",
                                    "prompt_id must be a UUID string in canonical lowercase "
                                    "hyphenated form; omit it to let the server generate one")
        targets = body.get("partial_execution_targets")
        if targets is not None and not isinstance(targets, list):
            targets = None
        checked = await self.host.validate(prompt_id, prompt, targets)
        verdict = None if checked is None else lenient(checked, targets)
        if verdict is not None and not verdict.ok:
            log.warning("invalid prompt: %s", verdict.error)
            return 400, verdict.refusal()
        backend_name = str(override.get("backend") or cfg.backend)
        url = override.get("url") or cfg.url
        checked_remote = None
        if (backend_name, url) == (cfg.backend, cfg.url):
            checked_remote = await self.preflight(prompt, user)
        if checked_remote is not None and not checked_remote.ok:
            log.warning("prompt refused by preflight: %s", checked_remote.refusal()["error"])
            return 400, checked_remote.refusal()
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        for key in SENSITIVE_EXTRA_DATA_KEYS:  # never queued, journaled or shipped
            extra.pop(key, None)
        extra["create_time"] = int(time.time() * 1000)
        outputs = verdict.outputs if verdict is not None else list(targets or [])
        job = RemoteJob(
            prompt_id=prompt_id, number=number, prompt=prompt, extra_data=extra,
            client_id=extra.get("client_id"), outputs_to_execute=outputs,
            backend=backend_name, url=url,
            partial_execution_targets=outputs if verdict is not None else targets,
            ship_models=[] if checked_remote is None
            else needs_to_json(checked_remote.ship, checked_remote.ship_nodes))
        self.dispatcher.add(job)
        return 200, {"prompt_id": prompt_id, "number": number,
                     "node_errors": verdict.node_errors if verdict is not None else {}}

    async def preflight(self, prompt: dict[str, Any], user: str = DEFAULT_USER
                        ) -> Preflight | None:
        """The prompt against the remote's cached catalog (None: no catalog yet, so the
        remote's own validation decides). A refusal from a stale catalog is checked once
        more against a refreshed one, so a remote that changed since is not refused on
        old news; a fresh one is trusted (on RunPod, asking would start a job)."""
        try:
            cache = self.catalog_for(user)
            cfg = self.config(user)
        except RemoteExecError:
            return None
        catalog = cache.current()
        if catalog is None:
            return None
        backend = cache.backend
        limit = int(cfg.ship_max_gb * 1024**3)
        can_ship = isinstance(backend, ModelStore) and backend.ships_models
        hashes = cache.source.preflight_hashes if cache.source is not None else None
        for attempt in range(2):
            result = preflight(prompt, catalog, self.host.model_path, max_ship_bytes=limit,
                               can_ship=can_ship)
            if result.ok:
                await conflicts(result, prompt, catalog, hashes,
                                lambda path: self.hashes.sha256(path)[0], self._remote_hashes)
            if result.ok or attempt or not cache.stale():
                return result
            try:
                fresh = await cache.refresh()
            except RemoteExecError:
                return result
            if fresh is None or fresh.content_version == catalog.content_version:
                return result
            catalog = fresh
        return None

    async def interrupt(self, prompt_id: str | None) -> None:
        if prompt_id:
            if prompt_id in self.dispatcher.running:
                await self.dispatcher.cancel(prompt_id)
        else:
            await self.dispatcher.cancel_running()

    async def delete(self, prompt_ids: list[str]) -> None:
        for prompt_id in prompt_ids:
            await self.dispatcher.cancel(prompt_id)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Resume the journal's jobs; with remote mode on, warm the `local` worker up now,
        so the first Run does not wait for its ComfyUI to start (a local run would not).
        A worker started at prestartup is adopted then; one the settings no longer ask
        for is stopped."""
        self.dispatcher.resume(self.journal.unfinished())
        loop = asyncio.get_running_loop()
        try:
            cfg = self.config()
            backend = self.backend(cfg.backend, cfg.url, cfg.token) if cfg.enabled else None
        except RemoteExecError as exc:
            log.warning("remote execution is not ready: %s", exc.message)
            backend = None
        warm_up = getattr(backend, "warm_up", None)  # a backend that starts its own worker

        async def warm() -> None:
            if warm_up is not None:
                await warm_up()
            await asyncio.to_thread(registry.discard_prestarted)

        self._warming = loop.create_task(warm())
        if backend is not None:  # the UI's first load may show the remote's models
            cache = self.catalog_for()
            if cache.current() is None or cache.stale():
                cache.refresh_soon()

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        await self.dispatcher.close()
        for cache in self.catalogs.values():
            await cache.close()
        await asyncio.to_thread(self.journal.close)
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:
                log.exception("closing backend %s", backend.name)

    async def status(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        try:
            cfg: dict[str, Any] = self.config(user).public_view()
        except ConfigError as exc:
            cfg = {"error": exc.message}
        running, pending = self.dispatcher.queue_items()
        try:
            catalog = self.catalog_for(user).status()
        except RemoteExecError:
            catalog = None
        return {"config": cfg, "catalog": catalog, "running": [item[1] for item in running],
                "pending": [item[1] for item in pending],
                "backends": [spec.public_view() for spec in registry.specs().values()],
                "cost": self.costs.view()}
