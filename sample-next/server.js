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
const bin = require.resolve("next/dist/bin/next");
process.argv = [process.argv[0], bin, ...args];
require(bin);
