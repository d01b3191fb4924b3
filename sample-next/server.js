"use strict";
// What PM2 runs in each cluster worker (stack `app.startScript: server.js`), and `npm start`:
// `next start` in this very process, on HOSTNAME:PORT from the environment (PM2 sets both from the
// stack). It only fills in next's command line, so the server, its graceful shutdown on
// SIGINT/SIGTERM and its reading of `.env` are Next's own. The light stand-in (../sample-app) has a
// server.js too: both apps answer to the same stack commands.
process.env.NEXT_TELEMETRY_DISABLED = process.env.NEXT_TELEMETRY_DISABLED || "1";
const args = [
  "start",
  "--hostname", process.env.HOSTNAME || "127.0.0.1",
  "--port", process.env.PORT || "3000",
];
if (process.env.KEEP_ALIVE_TIMEOUT) {
  args.push("--keepAliveTimeout", process.env.KEEP_ALIVE_TIMEOUT);
}
// PM2 waits for `process.send("ready")` (ecosystem `wait_ready`), which Next never sends: without it
// every instance of a reload waits PM2's listen_timeout. Say "ready" when Next's server listens
// (requests that arrive before its handlers are initialised wait for them, none fails).
if (typeof process.send === "function") {
  const http = require("node:http");
  const listen = http.Server.prototype.listen;
  http.Server.prototype.listen = function (...args) {
    this.once("listening", () => process.send("ready"));
    return listen.apply(this, args);
  };
}
const bin = require.resolve("next/dist/bin/next");
process.argv = [process.argv[0], bin, ...args];
require(bin);
