"""The Modal layer's parts through the interfaces they implement, over stand-ins: the
store (the `Store` seam on a Dict), the queue's messages, the settings, the image's
build steps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from PIL import Image

from comfy_remote_exec.errors import JobFailed
from comfy_remote_exec.platforms.modal import image as build
from comfy_remote_exec.platforms.modal import messages
from comfy_remote_exec.platforms.modal.config import Settings, gpu_list
from comfy_remote_exec.platforms.modal.standins import DictStandIn
from comfy_remote_exec.platforms.modal.store import ModalStore, read_all
from comfy_remote_exec.protocol import (
    COMPLETED,
    FAILED,
    Executing,
    JobStatus,
    Preview,
    Progress,
    Unknown,
)
from comfy_remote_exec.stack.spec import parse_stack
from comfy_remote_exec.worker.service.jobs import Job

REPO = Path(__file__).resolve().parents[3]


async def test_store_persists_records_and_events_but_not_previews() -> None:
    d = DictStandIn()
    store = await ModalStore.open(d, interval=0.01)
    job = Job(id="j1", nodes_total=2)
    store.log_for(job)
    store.save(job)
    job.log.append(JobStatus(job.status))
    await job.event(Executing(node="1", display_node="1"))
    await job.event(Preview(image=b"\xff\xd8frame", node="1"))
    await job.event(Progress(value=1, max=2, node="1"))
    running = Job(id="j2")
    store.log_for(running)
    store.save(running)
    await store.record_run("j2", "fc-123")
    job.life.end(COMPLETED)
    await job.changed()
    await store.close()
    records, events, runs = await read_all(d)
    assert records["j1"]["status"] == COMPLETED and records["j2"]["status"] == "queued"
    assert runs["j2"]["call_id"] == "fc-123"
    again = await ModalStore.open(d)
    by_id = {j.id: j for j in again.load_all()}
    assert [e.type for e in by_id["j1"].events] == [
        "job_status", "executing", "progress", "job_status"]
    assert [e.seq for e in by_id["j1"].events] == [1, 2, 4, 5]  # the preview was 3
    assert by_id["j2"].status == "queued", "an unfinished job stays so: its GPU call runs on"
    assert again.runs["j2"]["call_id"] == "fc-123"
    again.remove("j1")
    await again.close()
    records, events, _ = await read_all(d)
    assert "j1" not in records and "j1" not in events


def test_messages_round_trip_and_odd_items_do_not_raise() -> None:
    error = JobFailed("boom", code="execution_error", node_id="2")
    parsed = messages.parse(messages.end_item(FAILED, error))
    assert parsed.kind == messages.END and parsed.status == FAILED
    assert parsed.error is not None and parsed.error.node_id == "2"
    event = messages.parse(messages.event_item(Progress(value=3, max=9, node="4")))
    assert isinstance(event.payload, Progress) and event.payload.value == 3
    assert messages.parse(messages.start_item()).kind == messages.START
    for odd in ("text", {"k": "what"}, {"k": "event", "type": "preview", "data": {"image": "!"}}):
        assert isinstance(messages.parse(odd).payload, Unknown)


def test_a_preview_too_large_for_a_queue_item_is_shrunk() -> None:
    buf = io.BytesIO()
    Image.effect_noise((1400, 1400), 100).convert("RGB").save(buf, format="PNG")
    big = Preview(image=buf.getvalue(), image_type="image/png", node="3")
    assert messages.item_size(messages.event_item(big)) > messages.ITEM_LIMIT
    small = messages.fit(big)
    assert messages.item_size(messages.event_item(small)) <= messages.ITEM_BUDGET
    assert small.image_type == "image/jpeg" and small.node == "3"


def test_settings_from_the_environment() -> None:
    assert gpu_list(" L40S, a100-80gb ,") == ["l40s", "a100-80gb"]
    assert gpu_list("") == ["l40s", "a100", "a10g"]
    s = Settings.from_env({"GPU_CONFIG": "h100,a100", "MAX_GPU_CONTAINERS": "2",
                           "JOBS_PER_CONTAINER": "3", "MEMORY_SNAPSHOT": "0",
                           "REMOTE_EXEC_MODAL_APP": "mine"})
    assert (s.gpus, s.max_gpu_containers, s.jobs_per_container) == (["h100", "a100"], 2, 3)
    assert not s.memory_snapshot and s.jobs_dict == "mine-jobs" and s.web_label == "mine-api"
    assert Settings.from_env(s.env()) == s, "a container reads back what the deploy set"
    with pytest.raises(ValueError, match="MAX_GPU_CONTAINERS"):
        Settings.from_env({"MAX_GPU_CONTAINERS": "0"})


def test_image_steps_come_from_the_stack() -> None:
    stack = parse_stack({
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64"},
        "custom_nodes": [{"name": "nodes-a", "repo": "https://example.com/a.git",
                          "ref": "a" * 40, "recursive": True}]})
    comfy = build.comfyui_commands(stack)
    assert "checkout --quiet --detach v0.3.64" in comfy[0]
    assert any("torch==2.6.0" in c for c in comfy)
    nodes = build.custom_node_commands(stack)
    assert nodes[0].startswith("[ -e /comfyui/custom_nodes/nodes-a ] || git clone")
    assert any("checkout --quiet --detach " + "a" * 40 in c for c in nodes)
    assert any("submodule update --init --recursive" in c for c in nodes)
    assert nodes[-1].startswith("if [ -e /comfyui/custom_nodes/nodes-a/requirements.txt ]")
    assert "--constraint /torch-constraints.txt" in nodes[-1]
    deps = build.package_requirements(REPO / "pyproject.toml")
    assert "aiohttp>=3.9" in deps and not any(d.startswith("runpod") for d in deps)
    paths = yaml.safe_load(build.model_paths_yaml())["remote_exec_models_volume"]
    assert paths["base_path"] == "/models-volume/models"
    assert paths["upscale_models"] == "upscale_models"
    assert paths["text_encoders"].split() == ["text_encoders", "clip"]


def test_the_image_is_built_from_the_repositorys_stack_file() -> None:
    from comfy_remote_exec.stack.spec import load_stack

    stack = load_stack(REPO / "deploy" / "stack.yaml")
    assert stack.comfyui.ref in build.comfyui_commands(stack)[0]
    assert len([c for c in build.custom_node_commands(stack) if "git clone" in c]) == len(
        stack.custom_nodes)
