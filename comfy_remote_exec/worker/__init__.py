"""The remote worker: a supervised headless ComfyUI behind a job API.

The same code runs on RunPod (through the handler), on Modal (wrapped by the
Modal app), on any GPU host and on this machine (`python -m
comfy_remote_exec.worker`).
"""
