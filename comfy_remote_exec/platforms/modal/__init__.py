"""Modal: what the Modal app (`deploy/modal/app.py`) runs, kept apart from `modal`.

The app file holds only what must touch `modal` (the image, the functions and
classes, their volumes, secrets and schedules). Everything else is here and
imports no `modal`: the parts Modal lends the job service (`store` on a
Dict, `executor` spawning the GPU class and relaying its events from a Queue,
`storage` on a Volume), the GPU container's side (`gpu`, `sender`), the API
assembly (`api`), the scheduled work (`maintenance`), the set-up checks and
the volume fill (`setup`), the image's build steps (`image`) and the settings
(`config`). Each part takes Modal's objects as arguments, so `standins`
(in-process Dict, Queue, Volume and FunctionCall) run the same code here:
the tests, and `python -m comfy_remote_exec.platforms.modal.local`.
"""
