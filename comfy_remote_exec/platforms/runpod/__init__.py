"""RunPod serverless: the handler the worker image runs
(`python -m comfy_remote_exec.platforms.runpod.handler`).
"""
