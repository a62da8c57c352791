// comfy-remote-exec frontend. Settings and the status indicator arrive with the
// extension (issue 3); this file only registers the extension's name for now.
import { app } from "../../scripts/app.js";

app.registerExtension({ name: "RemoteExec" });
