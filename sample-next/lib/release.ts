import fs from "node:fs";
import path from "node:path";

// What the deploy wrote into the release (REVISION, REF) and what the build produced (BUILD_ID).
// The process runs in the release (PM2's cwd is `current`, a link to it).
function readTrimmed(file: string): string | null {
  try {
    return fs.readFileSync(path.join(process.cwd(), file), "utf8").trim() || null;
  } catch {
    return null;
  }
}

export const release = Object.freeze({
  version: readTrimmed("VERSION") ?? "unknown",
  commit: readTrimmed("REVISION"),
  buildId: readTrimmed(".next/BUILD_ID"),
});

export function color(): string {
  return process.env.BLUEGREEN_COLOR || "unknown";
}
