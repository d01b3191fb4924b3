'use strict';
// Where a release finds the app's shared directory (`<app.dir>/shared`: `.env`, the fault switch).
//
// Releases live at `<app.dir>/releases/<id>/` and PM2 runs them through the `<app.dir>/current`
// symlink. The release's own real path is used rather than the process cwd, because the cwd may be
// the symlink or the release depending on how the process was started, while the real path of this
// code is always the release. Outside that layout (a plain checkout) there is no shared directory
// unless APP_SHARED_DIR names one, so a checkout never reads a stray file next to its parent.

const fs = require('node:fs');
const path = require('node:path');

function releaseRoot() {
  return fs.realpathSync(path.join(__dirname, '..'));
}

function resolveSharedDir(releaseDir, env = process.env) {
  if (env.APP_SHARED_DIR) {
    return path.resolve(env.APP_SHARED_DIR);
  }
  const parent = path.dirname(releaseDir);
  if (path.basename(parent) === 'releases') {
    return path.join(path.dirname(parent), 'shared');
  }
  return null;
}

module.exports = { releaseRoot, resolveSharedDir };
