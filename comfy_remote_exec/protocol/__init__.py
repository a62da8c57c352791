"""Wire protocol v2, shared by the worker and the local extension.

The only place that knows the shape of what travels between the two sides:

- `jobs`: the job spec a client submits, its media and input overrides;
- `events`: the typed events a job streams back, and version negotiation;
- `outputs`: the descriptors of the files a job produced;
- `runpod`: the chunks a RunPod stream carries;
- `lifecycle`: the job's states, one state machine for both sides;
- `ranges`: `Content-Range`, for files that cross in parts;
- `timing`: a job's GPU seconds (queue wait, cold start, execution), for cost;
- `common`: names, JSON types, base64, limits.

Everything is re-exported here, so `from comfy_remote_exec.protocol import X`
is the one import a consumer needs. Errors cross every wire as the one error
family's `to_dict` / `from_dict` (`errors.RemoteExecError`).
"""

from ..errors import ProtocolMismatch
from .common import (
    ANNOTATIONS,
    MAX_MEDIA_BYTES,
    MAX_MEDIA_ITEMS,
    MAX_NAME_LENGTH,
    JsonObject,
    JsonValue,
    b64encode,
    decode_base64,
    is_sha256,
    media_name,
    safe_relpath,
    split_annotation,
)
from .events import (
    COMFY_EVENTS,
    COMFY_PAYLOADS,
    ENDINGS,
    PAYLOADS,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    JobStatus,
    NodeProgress,
    Payload,
    Preview,
    Progress,
    ProgressState,
    Unknown,
    check_version,
    payload_from,
)
from .jobs import INPUT_TYPES, InputOverride, JobSpec, MediaItem
from .lifecycle import (
    CANCELLED,
    COMPLETED,
    FAILED,
    JOB_STATUSES,
    QUEUED,
    RUNNING,
    TERMINAL_STATUSES,
    Lifecycle,
    LifecycleError,
)
from .outputs import FOLDERS, MEDIA_TYPES, OutputFile, media_type
from .ranges import ContentRange
from .timing import JobTiming

__all__ = [
    "ANNOTATIONS", "CANCELLED", "COMFY_EVENTS", "COMFY_PAYLOADS", "COMPLETED", "ENDINGS",
    "FAILED", "FOLDERS", "INPUT_TYPES", "JOB_STATUSES", "MAX_MEDIA_BYTES", "MAX_MEDIA_ITEMS",
    "MAX_NAME_LENGTH", "MEDIA_TYPES", "PAYLOADS", "PROTOCOL_HEADER", "PROTOCOL_VERSION",
    "QUEUED", "RUNNING", "SUPPORTED_VERSIONS", "TERMINAL_STATUSES", "ContentRange",
    "Event", "Executed", "Executing", "ExecutionCached", "ExecutionError",
    "ExecutionInterrupted", "ExecutionStart", "ExecutionSuccess", "InputOverride", "JobSpec",
    "JobStatus", "JobTiming", "JsonObject", "JsonValue", "Lifecycle", "LifecycleError", "MediaItem",
    "NodeProgress", "OutputFile", "Payload", "Preview", "Progress", "ProgressState",
    "ProtocolMismatch", "Unknown", "b64encode", "check_version",
    "decode_base64", "is_sha256", "media_name", "media_type", "payload_from", "safe_relpath",
    "split_annotation",
]
