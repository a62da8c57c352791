// comfy-remote-exec frontend: settings, a status badge, and toasts for remote errors.
//
// Settings live in ComfyUI's own settings dialog (category "Remote Exec") and
// are read by the server on every Run, so a change applies to the next Run.
// Their defaults mirror what the server would use when a setting was never
// saved (e.g. the launcher turns remote mode on), so the dialog never lies.
// No secret ever passes through here: tokens and API keys stay on the server.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const BACKENDS = ["local", "http", "runpod", "modal"];

async function fetchJson(path) {
  try {
    const resp = await api.fetchApi(path);
    return resp.ok ? await resp.json() : null;
  } catch {
    return null;
  }
}

const initial = (await fetchJson("/remote_exec/status"))?.config ?? {};

function setting(id) {
  return app.extensionManager?.setting?.get(id);
}

// -- status badge -------------------------------------------------------------

const badge = document.createElement("div");
badge.id = "remote-exec-status";
badge.title = "Remote execution (Settings → Remote Exec)";
Object.assign(badge.style, {
  position: "fixed", right: "12px", top: "46px", zIndex: 1000,
  padding: "2px 8px", borderRadius: "10px", font: "12px sans-serif",
  background: "var(--comfy-menu-bg, #222)", color: "var(--fg-color, #ddd)",
  border: "1px solid var(--border-color, #444)", cursor: "pointer", userSelect: "none",
});
badge.addEventListener("click", () => {
  app.extensionManager?.command?.execute?.("Comfy.ShowSettingsDialog");
});

function showBadge(enabled, backend, state, detail) {
  const dot = { ok: "#3c3", error: "#e44", idle: "#aa3", off: "#888" }[state] ?? "#888";
  badge.innerHTML = "";
  const mark = document.createElement("span");
  mark.textContent = "● ";
  mark.style.color = dot;
  const text = document.createElement("span");
  text.textContent = enabled ? `Remote: ${backend}` : "Remote: off";
  badge.append(mark, text);
  badge.dataset.state = state;
  badge.dataset.enabled = String(enabled);
  badge.title = detail ? `Remote execution: ${detail}` : "Remote execution";
}

async function refreshBadge() {
  const enabled = setting("RemoteExec.Enabled") ?? initial.enabled ?? false;
  const backend = setting("RemoteExec.Backend") ?? initial.backend ?? "local";
  if (!enabled) {
    showBadge(false, backend, "off", "off: Run executes on this machine");
    return;
  }
  const health = await fetchJson("/remote_exec/health");
  if (!health) {
    showBadge(true, backend, "error", "cannot reach this ComfyUI's extension");
  } else if (!health.ok) {
    showBadge(true, backend, "error", health.error?.message ?? "unavailable");
  } else if (health.remote?.status === "idle") {
    showBadge(true, backend, "idle", health.remote.detail);
  } else if (health.remote?.status === "warm" || health.remote?.status === "cold") {
    // RunPod: a cold endpoint answers, but its first job waits for a worker to boot.
    const warm = health.remote.status === "warm";
    showBadge(true, `${backend} · ${health.remote.status}`, warm ? "ok" : "idle",
              warm ? "workers are warm" : "no warm worker: the next run starts one");
  } else {
    showBadge(true, backend, "ok", `${backend} is healthy`);
  }
}

// -- toasts -------------------------------------------------------------------

function toastError(detail) {
  const tail = (detail.log_tail ?? []).slice(-5).join("\n");
  const text = [detail.message ?? "The remote run failed", tail].filter(Boolean).join("\n\n");
  const toast = app.extensionManager?.toast;
  if (toast?.add) {
    toast.add({ severity: "error", summary: "Remote run failed", detail: text, life: 15000 });
  } else {
    console.error("[remote-exec]", text);
  }
}

app.registerExtension({
  name: "RemoteExec",
  settings: [
    // The dialog lists a category's settings last-registered first.
    {
      id: "RemoteExec.ParallelJobs",
      category: ["Remote Exec", "Remote execution", "Parallel jobs"],
      name: "Remote jobs run at once",
      type: "number",
      attrs: { min: 1, max: 64, step: 1 },
      defaultValue: initial.parallel ?? 1,
    },
    {
      id: "RemoteExec.EndpointURL",
      category: ["Remote Exec", "Remote execution", "Endpoint URL"],
      name: "Endpoint URL (http and Modal backends)",
      tooltip: "The worker's base URL. Tokens are set on the server, never here.",
      type: "text",
      defaultValue: initial.backend === "local" ? "" : (initial.url ?? ""),
    },
    {
      id: "RemoteExec.Backend",
      category: ["Remote Exec", "Remote execution", "Backend"],
      name: "Backend",
      tooltip: "local: a worker on this machine; http: any worker URL; runpod; modal.",
      type: "combo",
      options: BACKENDS,
      defaultValue: BACKENDS.includes(initial.backend) ? initial.backend : "local",
      onChange: () => refreshBadge(),
    },
    {
      id: "RemoteExec.Enabled",
      category: ["Remote Exec", "Remote execution", "Enabled"],
      name: "Run workflows on the remote GPU",
      tooltip: "When on, Run executes on the chosen backend; outputs land in output/ as usual.",
      type: "boolean",
      defaultValue: Boolean(initial.enabled),
      onChange: () => refreshBadge(),
    },
  ],
  async setup() {
    document.body.append(badge);
    api.addEventListener("remote_exec.error", ({ detail }) => toastError(detail));
    await refreshBadge();
    setInterval(refreshBadge, 15000);
  },
});
