"""The environment variables the extension and launcher read, with their meaning.

Standard library only, so the launcher's `--help` can list them before any
dependency is installed.
"""

ENV_DOC = {
    "REMOTE_EXEC_ENABLED": "default for remote mode (1/0) while the setting was never changed",
    "REMOTE_EXEC_BACKEND": "default backend: local, http, runpod, modal (the registry's)",
    "REMOTE_EXEC_BACKEND_MODULES": "more backend modules to register (comma-separated)",
    "REMOTE_EXEC_URL": "worker URL for http, deployment URL for modal (set by the launcher)",
    "REMOTE_EXEC_TOKEN": "bearer token for the worker's job API (secret; never shown)",
    "REMOTE_EXEC_PARALLEL": "default number of remote jobs run at once (1)",
    "REMOTE_EXEC_STATE_DIR": "job journal and local worker folder (default: platformdirs)",
    "REMOTE_EXEC_CONFIG": "secrets file, mode 0600 (default: platformdirs config dir)",
    "REMOTE_EXEC_OPEN_RESULTS": "1 to open each finished output with the system viewer",
    "REMOTE_EXEC_MODAL_APP": "the deployed Modal app whose URL to find (comfy-remote-exec)",
    "REMOTE_EXEC_MODAL_FUNCTION": "its web function serving the job API (api)",
    "REMOTE_EXEC_CACHE_DIR": "where found URLs are cached (default: platformdirs cache dir)",
    "RUNPOD_API_KEY": "RunPod API key for the runpod backend (secret; never shown)",
    "RUNPOD_API_BASE": "RunPod API base URL (default https://api.runpod.ai/v2)",
    "REMOTE_EXEC_WORKER_ARGS": "extra ComfyUI arguments for a local worker (e.g. --cpu)",
}
