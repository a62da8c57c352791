// comfy-remote-exec frontend: settings, a status badge, toasts for remote errors and job costs.
//
// Settings live in ComfyUI's own settings dialog (category "Remote Exec") and
// are read by the server on every Run, so a change applies to the next Run.
// Their defaults mirror what the server would use when a setting was never
// saved (e.g. the launcher turns remote mode on), so the dialog never lies.
// No secret ever passes through here: tokens and API keys stay on the server.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";


async function fetchJson(path) {
  try {
    const resp = await api.fetchApi(path);
    return resp.ok ? await resp.json() : null;
  } catch {
    return null;
  }
}

const status = await fetchJson("/remote_exec/status");
const initial = status?.config ?? {};
// The server's backend registry decides the list; the fallback is for a server too old
// to send it.
const BACKENDS = status?.backends ?? [{ name: "local", summary: "a worker on this machine",
                                       endpoint: "" }];
const BACKEND_NAMES = BACKENDS.map((b) => b.name);

function setting(id) {
  return app.extensionManager?.setting?.get(id);
}

// -- plain text ---------------------------------------------------------------

// CSI sequences (colours, cursor moves) and OSC sequences (titles, links), as
// ComfyUI 0.26 writes around its log prefixes. The same pattern as
// comfy_remote_exec/plaintext.py, which strips them where the worker keeps its log tail.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][ -~]|\x1b[0-Z\\^-~]/g;

function plainText(value) {
  return String(value ?? "").replace(ANSI, "");
}

// -- status badge -------------------------------------------------------------
//
// Frontends that offer `actionBarButtons` (1.45 and 1.58 do) render the badge as
// an action-bar button, laid out beside Run and the job queue so it covers
// nothing. The frontend keeps extensions raw (not reactive), so the button is
// rendered once with a fixed label and this module writes the live state onto
// its element, found by its class, and again whenever Vue re-creates it.
// Older frontends (1.27) get the same button in the top menu's legacy slot
// (`app.menu.settingsGroup`, where extensions have always added buttons).
// Either way the element carries id `remote-exec-status`, `data-state` and
// `data-enabled`, and a click opens the settings.

const HOOK = "remote-exec-status";
const DOTS = { ok: "#3c3", error: "#e44", idle: "#aa3", off: "#888" };
const view = { text: "Remote", state: "off", enabled: false, title: "Remote execution" };

function openSettings() {
  app.extensionManager?.command?.execute?.("Comfy.ShowSettingsDialog");
}

const style = document.createElement("style");
style.textContent = `
  .${HOOK}-dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%;
                 background: ${DOTS.off}; flex-shrink: 0; }
  ${Object.entries(DOTS).map(([state, colour]) =>
    `#${HOOK}[data-state="${state}"] .${HOOK}-dot { background: ${colour}; }`).join("\n")}
  .${HOOK}-legacy { display: inline-flex; align-items: center; gap: 6px; padding: 2px 8px;
                    border-radius: 10px; font: 12px sans-serif; white-space: nowrap;
                    background: var(--comfy-input-bg, #222); color: var(--fg-color, #ddd);
                    border: 1px solid var(--border-color, #444); cursor: pointer; }
`;

let legacy = null;  // the fallback element, once placed

function hostElement() {
  const button = document.querySelector(`button.${HOOK}`);
  if (button && legacy) {
    // The action bar showed up late (it was hidden at start): one badge, not two.
    legacy.remove();
    legacy = null;
  }
  return button ?? legacy;
}

function render() {
  const el = hostElement();
  if (!el) return;
  if (el.id !== HOOK) el.id = HOOK;
  if (el.dataset.state !== view.state) el.dataset.state = view.state;
  if (el.dataset.enabled !== String(view.enabled)) el.dataset.enabled = String(view.enabled);
  if (el.title !== view.title) el.title = view.title;
  if (el.getAttribute("aria-label") !== view.text) el.setAttribute("aria-label", view.text);
  const label = el.querySelector("span");
  if (label && label.textContent !== view.text) label.textContent = view.text;
}

function placeLegacy() {
  const slot = app.menu?.settingsGroup?.element ?? app.menu?.element;
  legacy = document.createElement("button");
  legacy.className = `${HOOK}-legacy`;
  legacy.type = "button";
  legacy.append(Object.assign(document.createElement("i"), { className: `${HOOK}-dot` }),
                document.createElement("span"));
  legacy.addEventListener("click", openSettings);
  if (slot) {
    slot.append(legacy);
  } else {
    // No top menu at all: a corner of the canvas that holds no control.
    Object.assign(legacy.style, { position: "fixed", left: "12px", bottom: "12px", zIndex: 1000 });
    document.body.append(legacy);
  }
  render();
}

// Wait (with a deadline) for the action-bar button; without one, use the legacy slot.
function mountBadge(deadlineMs = 3000) {
  document.head.append(style);
  new MutationObserver(() => {
    const el = hostElement();
    if (el && (el.id !== HOOK || el.querySelector("span")?.textContent !== view.text)) render();
  }).observe(document.body, { childList: true, subtree: true });
  if (hostElement()) {
    render();
    return;
  }
  // Timers, not animation frames: those never fire while the tab is in the background.
  const started = performance.now();
  const poll = () => {
    if (document.querySelector(`button.${HOOK}`)) render();
    else if (performance.now() - started > deadlineMs) placeLegacy();
    else setTimeout(poll, 50);
  };
  poll();
}

// How fresh the remote's models and nodes in the local UI are (`catalog` of the health).
function catalogNote(catalog) {
  if (!catalog?.content_version) return "";
  const at = catalog.fetched_at ? new Date(catalog.fetched_at * 1000).toLocaleTimeString() : "?";
  return `; remote models and nodes ${catalog.content_version.slice(0, 8)} as of ${at}`;
}

function showBadge(enabled, backend, state, detail, catalog = null) {
  view.enabled = enabled;
  view.state = state;
  view.text = enabled ? `Remote: ${backend}` : "Remote: off";
  view.title = plainText(detail ? `Remote execution: ${detail}` : "Remote execution") +
    plainText(catalogNote(catalog)) + " (click for settings)";
  render();
}

let refreshes = 0;  // only the newest refresh may draw: health answers can cross

// The remote gained or lost a model or a node (its catalog has another version): reload
// the node definitions as R does, so loaders list the change without a page reload.
// The first version seen is the one this page's lists came with.
let catalogVersion = null;
function catalogSeen(version) {
  if (!version) return;
  if (catalogVersion !== null && catalogVersion !== version) app.refreshComboInNodes?.();
  catalogVersion = version;
}

// `changed` carries a value from a setting's onChange, which frontends call before
// they store the new value.
async function refreshBadge(changed = {}) {
  const ticket = ++refreshes;
  const enabled = changed.enabled ?? setting("RemoteExec.Enabled") ?? initial.enabled ?? false;
  const backend = changed.backend ?? setting("RemoteExec.Backend") ?? initial.backend ?? "local";
  if (!enabled) {
    showBadge(false, backend, "off", "off: Run executes on this machine");
    return;
  }
  const health = await fetchJson("/remote_exec/health");
  if (ticket !== refreshes) return;
  catalogSeen(health?.catalog?.content_version);
  if (!health) {
    showBadge(true, backend, "error", "cannot reach this ComfyUI's extension");
  } else if (!health.ok) {
    showBadge(true, backend, "error", health.error?.message ?? "unavailable");
  } else if (health.remote?.status === "idle") {
    showBadge(true, backend, "idle", health.remote.detail, health.catalog);
  } else if (health.remote?.status === "warm" || health.remote?.status === "cold") {
    // RunPod, Modal: a cold endpoint answers, but its first job waits for a worker (a GPU
    // container) to boot.
    const warm = health.remote.status === "warm";
    showBadge(true, `${backend} · ${health.remote.status}`, warm ? "ok" : "idle",
              warm ? "workers are warm" : "no warm worker: the next run starts one",
              health.catalog);
  } else {
    showBadge(true, backend, "ok", `${backend} is healthy`, health.catalog);
  }
}

// -- toasts -------------------------------------------------------------------

function toastError(detail) {
  const tail = (detail.log_tail ?? []).slice(-5).map(plainText).join("\n");
  const message = plainText(detail.message ?? "") || "The remote run failed";
  const text = [message, tail].filter(Boolean).join("\n\n");
  const toast = app.extensionManager?.toast;
  if (toast?.add) {
    toast.add({ severity: "error", summary: "Remote run failed", detail: text, life: 15000 });
  } else {
    console.error("[remote-exec]", text);
  }
}

// `remote_exec.shipping`: a local model the remote lacks goes up before the run.
let shippingToast = null;
function toastShipping(detail) {
  const toast = app.extensionManager?.toast;
  const name = plainText(`${detail.folder ?? ""}/${detail.name ?? ""}`);
  const text = detail.finished ? `${name}: on the remote` : `${name}: ${detail.percent ?? 0}%`;
  if (!toast?.add) {
    console.info("[remote-exec] shipping", text);
    return;
  }
  if (shippingToast && toast.remove) toast.remove(shippingToast);
  shippingToast = { severity: "info", summary: "Shipping a model to the remote", detail: text,
                    life: detail.finished ? 4000 : 60000 };
  toast.add(shippingToast);
}

// A finished remote job's GPU seconds and what they cost (`remote_exec.cost`).
function money(value, currency) {
  if (value === null || value === undefined) return null;
  const digits = value < 0.01 ? 5 : 4;
  return `${currency === "USD" ? "$" : `${currency} `}${Number(value).toFixed(digits)}`;
}

function costText(detail) {
  const t = detail.timing ?? {};
  const parts = [`run ${Number(t.execution_s ?? 0).toFixed(1)} s`];
  if (t.queue_wait_s) parts.push(`queue ${Number(t.queue_wait_s).toFixed(1)} s`);
  if (t.cold_start_s) parts.push(`cold start ${Number(t.cold_start_s).toFixed(1)} s`);
  const seconds = `${Number(detail.gpu_seconds ?? 0).toFixed(1)} GPU s (${parts.join(", ")})`;
  const cost = money(detail.cost, detail.currency);
  const priced = cost ? `${cost}${detail.gpu ? ` on ${plainText(detail.gpu)}` : ""}`
    : "no price set for this backend";
  // The session's cost only once a job of it had a price: a total of $0 is no price.
  const session = detail.session ?? {};
  const jobs = Number(session.jobs ?? 0);
  const unpriced = Number(session.unpriced ?? 0);
  let total = `session: ${Number(session.gpu_seconds ?? 0).toFixed(1)} GPU s`;
  if (jobs > unpriced) {
    total += `, ${money(session.cost ?? 0, session.currency ?? "USD")}`;
    if (unpriced) total += ` (${unpriced} unpriced)`;
  }
  return `${seconds} · ${priced} · ${total}`;
}

function toastCost(detail) {
  const text = costText(detail);
  const toast = app.extensionManager?.toast;
  if (toast?.add) {
    const summary = !detail.status || detail.status === "completed" ? "Remote job done"
      : `Remote job ${plainText(detail.status)}`;
    toast.add({ severity: "info", summary, detail: text, life: 8000 });
  } else {
    console.info("[remote-exec]", text);
  }
}

app.registerExtension({
  name: "RemoteExec",
  // Frontends without this API (1.27) ignore it; mountBadge() then uses the menu slot.
  actionBarButtons: [{ icon: `${HOOK}-dot`, label: "Remote", class: HOOK, onClick: openSettings }],
  settings: [
    // The dialog lists a category's settings last-registered first.
    {
      id: "RemoteExec.ShipModelsMaxGB",
      category: ["Remote Exec", "Remote execution", "Ship models max GB"],
      name: "Ship local models the remote lacks, up to (GB)",
      tooltip: "A model the workflow uses that the remote lacks is uploaded before the run "
        + "when it is at most this size. Larger ones: python -m comfy_remote_exec models sync.",
      type: "number",
      attrs: { min: 0, max: 1000, step: 0.5 },
      defaultValue: initial.ship_max_gb ?? 2,
    },
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
      name: "Endpoint URL",
      tooltip: BACKENDS.filter((b) => b.endpoint).map((b) => `${b.name}: ${b.endpoint}`)
        .join("; ") + ". Tokens are set on the server, never here.",
      type: "text",
      defaultValue: initial.backend === "local" ? "" : (initial.url ?? ""),
    },
    {
      id: "RemoteExec.Backend",
      category: ["Remote Exec", "Remote execution", "Backend"],
      name: "Backend",
      tooltip: BACKENDS.map((b) => `${b.name}: ${b.summary}`).join("; "),
      type: "combo",
      options: BACKEND_NAMES,
      defaultValue: BACKEND_NAMES.includes(initial.backend) ? initial.backend
        : (BACKEND_NAMES[0] ?? "local"),
      onChange: (backend) => refreshBadge({ backend }),
    },
    {
      id: "RemoteExec.Enabled",
      category: ["Remote Exec", "Remote execution", "Enabled"],
      name: "Run workflows on the remote GPU",
      tooltip: "When on, Run executes on the chosen backend; outputs land in output/ as usual.",
      type: "boolean",
      defaultValue: Boolean(initial.enabled),
      onChange: (enabled) => refreshBadge({ enabled }),
    },
  ],
  async setup() {
    mountBadge();
    api.addEventListener("remote_exec.error", ({ detail }) => toastError(detail));
    api.addEventListener("remote_exec.shipping", ({ detail }) => toastShipping(detail));
    api.addEventListener("remote_exec.cost", ({ detail }) => toastCost(detail));
    await refreshBadge();
    setInterval(() => refreshBadge(), 15000);
  },
});
