"""The remote worker: a supervised headless ComfyUI behind a job API.

The same code runs on RunPod (through the handler), on Modal (wrapped by the
Modal app), on any GPU host and on this machine (`python -m
comfy_remote_exec.worker`).

Its rooms: `comfy/` (the ComfyUI process, its client, the runner, event
translation, outputs), `service/` (the job service and its store, storage,
webhooks), `api/` (the HTTP routes) and `inputs/` (media, URLs, blobs,
preparing the workflow). `app` and `__main__` assemble them.
"""
