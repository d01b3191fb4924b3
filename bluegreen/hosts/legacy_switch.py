"""The thin `jw-deployment-state.sh` that replaces the estate's own switch script on the load balancer.

The team's habits (and the old Node MCP server) call `jw-deployment-state.sh get|set|switch` on the
HAProxy host. After the takeover HAProxy routes by its live-colour map, so the old script's switch
(rewrite `use_backend` in haproxy.cfg, reload) would break routing and make the journal lie. This
script keeps the interface and does each command the new way:

- `get [KEY]`: the journal (`state.json`, bluegreen's, with its history) or one key, as before;
- `set KEY VALUE`: as before, under the journal's flock; `prod`/`standby` only to what HAProxy
  really serves (moving traffic is `switch`, never an edit of the journal);
- `history [N]`: the newest N switches and deploys;
- `switch [COLOUR] [--emergency] [--reason TEXT]`: bluegreen's flip: refuses a target with no
  server UP and a held deployment lock (unless `--emergency`, which takes the lock over, recorded
  as pre-empted, like `bluegreen switch --emergency`); holds the lock; `set map live/preview` on one
  admin-socket connection, checked; the map file rewritten so a reload keeps the flip; the switch
  recorded in the journal (or, if it does not parse, in the side file the next bluegreen command
  folds in); the lock released. Repeating a switch that already took effect changes nothing.

What it says to the host is built here, from the same pieces the tool uses (lock commands, map
text, atomic writes), so the two cannot drift apart silently.
"""

from __future__ import annotations

import shlex

from bluegreen.hosts.haproxy_cli import HaproxyPaths, routing_entries, set_map, show_map
from bluegreen.hosts.journal import state_lock_path
from bluegreen.hosts.lock import create_exclusive_command, take_over_command
from bluegreen.model.journal import side_path
from bluegreen.model.legacy import THIN_MARKER
from bluegreen.model.topology import COLORS, Topology
from bluegreen.render.bootstrap import STATE_SCRIPT
from bluegreen.render.haproxy import render_live_map
from bluegreen.render.shell import atomic_write_command

BACKUP_SUFFIX = ".pre-bluegreen"


def _functions(t: Topology) -> list[str]:
    paths = HaproxyPaths.from_topology(t)
    q = shlex.quote
    lines = [
        "die() { echo \"jw-deployment-state.sh: $*\" >&2; exit 1; }",
        f"cli() {{ printf '%s\\n' \"$1\" | socat -T 5 -t 5 - {q('UNIX-CONNECT:' + paths.admin_socket)}; }}",
        # The colour HAProxy serves, from its runtime map (the one truth; the journal follows it).
        f"live_colour() {{ cli {q(show_map(paths.map))} | awk '$2 == \"live\" {{ sub(/^bk_/, \"\", $3); "
        "print $3 }'; }",
        "other() { if [ \"$1\" = blue ]; then echo green; else echo blue; fi; }",
        # Servers of a backend that HAProxy sees UP (show stat: 1 pxname, 2 svname, 18 status).
        "up_servers() { cli 'show stat' | awk -F, -v b=\"bk_$1\" '$1 == b && $2 != \"BACKEND\" && "
        "$2 != \"FRONTEND\" && $18 ~ /^UP/ { n++ } END { print n + 0 }'; }",
        "write_map() {",
        "  case \"$1\" in",
    ]
    for color in COLORS:
        text = q(render_live_map(t, color))
        lines.append(f"    {color}) printf %s {text} | {{ {atomic_write_command(paths.map)}; }} ;;")
    lines += ["  esac", "}"]
    return lines


def _switch(t: Topology) -> list[str]:
    lb = t.load_balancer
    paths = HaproxyPaths.from_topology(t)
    q = shlex.quote
    lock = lb.path(t.journal.lock_path)
    sets = {c: ";".join([*(set_map(paths.map, k, v) for k, v in routing_entries(c).items()), show_map(paths.map)])
            for c in COLORS}
    return [
        "do_switch() {",
        "  local target='' emergency=false reason='switch via jw-deployment-state.sh'",
        "  while [ $# -gt 0 ]; do",
        "    case \"$1\" in",
        "      blue|green) target=$1 ;;",
        "      --emergency) emergency=true ;;",
        "      --reason) reason=${2:?--reason needs a text}; shift ;;",
        "      *) echo \"usage: $0 switch [blue|green] [--emergency] [--reason TEXT]\" >&2; exit 2 ;;",
        "    esac; shift",
        "  done",
        "  local live; live=$(live_colour) || true",
        "  case \"$live\" in blue|green) ;; *) die \"HAProxy's live-colour map names no colour"
        f" (got '$live'); is HAProxy running with {paths.map}?\" ;; esac",
        "  [ -n \"$target\" ] || target=$(other \"$live\")",
        "  if [ \"$target\" = \"$live\" ]; then echo \"$target is already live: nothing to do\"; return 0; fi",
        "  if [ \"$emergency\" != true ] && [ \"$(up_servers \"$target\")\" -eq 0 ]; then",
        "    die \"bk_$target has no server UP in HAProxy: refusing to send live traffic there"
        " (--emergency switches anyway)\"",
        "  fi",
        "  local token now who lockjson preempted='' rc=0",
        "  token=$(tr -d '-' < /proc/sys/kernel/random/uuid)",
        "  now=$(date +%s.%N); who=\"${SUDO_USER:-${USER:-$(id -un)}}@$(hostname) via jw-deployment-state.sh\"",
        "  lockjson=$(jq -n --arg holder \"$who\" --arg host \"$(hostname)\" --argjson pid $$"
        " --arg op \"switch to $target (jw-deployment-state.sh)\" --argjson now \"$now\" --arg token \"$token\""
        " '{holder: $holder, host: $host, pid: $pid, operation: $op, started: $now, heartbeat: $now,"
        " startedAt: ($now | floor | todate), heartbeatAt: ($now | floor | todate), token: $token}')",
        "  if [ \"$emergency\" = true ]; then",
        f"    preempted=$(printf '%s\\n' \"$lockjson\" | ( {take_over_command(lock)} )) || rc=$?",
        "  else",
        f"    printf '%s\\n' \"$lockjson\" | ( {create_exclusive_command(lock)} ) || rc=$?",
        "    if [ $rc -eq 3 ]; then",
        f"      die \"$(jq -r '\"the deployment lock is held by \\(.holder) for \\(.operation) since "
        f"\\(.startedAt // .started)\"' {q(lock)} 2>/dev/null || echo 'the deployment lock is held')"
        " (wait for it, or --emergency to take it over)\"",
        "    fi",
        "  fi",
        "  [ $rc -eq 0 ] || die \"could not take the deployment lock (exit $rc)\"",
        "  TOKEN=$token; trap release_lock EXIT",
        "  local answer",
        "  case \"$target\" in",
        *[f"    {c}) answer=$(cli {q(sets[c])}) || die 'HAProxy did not answer the flip' ;;" for c in COLORS],
        "  esac",
        "  local now_live; now_live=$(printf '%s\\n' \"$answer\" | awk '$2 == \"live\" { print $3 }' | tail -n 1)",
        "  if [ \"$now_live\" != \"bk_$target\" ]; then",
        "    die \"HAProxy did not take the new map: $answer\"",
        "  fi",
        f"  write_map \"$target\" || echo 'jw-deployment-state.sh: HAProxy routes to '\"$target\"' but writing"
        f" {paths.map} failed: a reload before it is fixed would undo the flip' >&2",
        "  record_switch \"$live\" \"$target\" \"$reason\" \"$who\" \"$emergency\" \"$token\" \"$preempted\"",
        "  echo \"switched: $live -> $target (HAProxy map, journal)\"",
        "}",
    ]


def _record(t: Topology) -> list[str]:
    lb = t.load_balancer
    q = shlex.quote
    side = side_path(lb.path(t.journal.path))
    entry = ("{type: \"switch\", from: $from, to: $to, timestamp: $ts, reason: $reason, who: $who, "
             "emergency: $emergency, path: \"jw-deployment-state.sh\", id: $id} + "
             "(if ($pre | length) > 0 then {preempted: ($pre | fromjson? // {} | "
             "{holder, host, pid, operation})} else {} end)")
    update = (".prod = $to | .standby = $from | .lastSwitch = $ts | .switchCount = ((.switchCount // 0) + 1)"
              f" | .history = [{entry}] + (.history // [])")
    args = ("--arg from \"$1\" --arg to \"$2\" --arg reason \"$3\" --arg who \"$4\" --argjson emergency \"$5\" "
            "--arg id \"$6\" --arg pre \"$7\" --arg ts \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"")
    return [
        # Under the journal's flock (bluegreen's writes take it too); a journal that does not parse
        # is left alone and the switch goes to the side file, which the next bluegreen run folds in.
        # History is never trimmed here: what bluegreen keeps of it is bluegreen's business.
        "record_switch() {",
        "  (",
        "    exec 9>\"$STATE_LOCK\"; locked=false; flock -w 10 9 && locked=true",
        "    parses=false",
        "    { [ ! -e \"$STATE\" ] || jq -e 'type == \"object\"' \"$STATE\" >/dev/null 2>&1; } && parses=true",
        "    if [ \"$locked\" = true ] && [ \"$parses\" = true ]; then",
        f"      {{ [ -e \"$STATE\" ] && cat \"$STATE\" || echo '{{}}'; }} | jq {args} {q(update)} \\",
        "        > \"$STATE.bluegreen-tmp\"",
        "      chmod 600 \"$STATE.bluegreen-tmp\" && mv -f \"$STATE.bluegreen-tmp\" \"$STATE\"",
        "    else",
        f"      jq -cn {args} {q(entry)} >> {q(side)}",
        f"      echo \"jw-deployment-state.sh: $STATE is locked or does not parse; recorded in {side}\" >&2",
        "    fi",
        "  )",
        "}",
        "release_lock() {",
        "  [ -n \"${TOKEN:-}\" ] || return 0",
        f"  ( exec 8>>{q(lb.path(t.journal.lock_path) + '.mutex')}; flock -w 10 8 || exit 4;",
        f"    grep -qF \"\\\"token\\\": \\\"$TOKEN\\\"\" {q(lb.path(t.journal.lock_path))} 2>/dev/null || exit 0;",
        f"    rm -f -- {q(lb.path(t.journal.lock_path))} ) || true",
        "}",
    ]


def _get_set_history(t: Topology) -> list[str]:
    history = ('.history // [] | .[:$n][] | (.timestamp // .when // "?") + "  " + '
               '(if (.type // "switch") == "switch" then "switch  \\(.from // "?") -> \\(.to // "?")  '
               '\\(.reason // "")" elif .type == "deploy" then "deploy  \\(.color // .colour // "?") '
               '\\(.ref // "") \\((.sha // "")[0:7]) \\(.result // "")" else (.type | tostring) end)'
               ' + (if .who then "  (\\(.who))" else "" end)')
    return [
        "do_get() {",
        "  exec 9>\"$STATE_LOCK\"; flock -w 10 9 || die 'state is locked'",
        "  if [ -n \"${1:-}\" ]; then jq -r --arg k \"$1\" '.[$k]' \"$STATE\"; else cat \"$STATE\"; fi",
        "}",
        "do_set() {",
        "  [ $# -eq 2 ] || { echo \"usage: $0 set KEY VALUE\" >&2; exit 2; }",
        "  if [ \"$1\" = prod ] || [ \"$1\" = standby ]; then",
        "    local live want; live=$(live_colour) || true",
        "    want=$live; [ \"$1\" = standby ] && want=$(other \"$live\")",
        "    if [ \"$2\" != \"$want\" ]; then",
        "      echo \"jw-deployment-state.sh: HAProxy serves ${live:-nothing}, so $1 is $want; setting it to $2 by"
        " hand would make the journal lie. Move traffic with: $0 switch $( [ \"$1\" = prod ] && echo \"$2\" ||"
        " other \"$2\")\" >&2",
        "      exit 2",
        "    fi",
        "  fi",
        "  exec 9>\"$STATE_LOCK\"; flock -w 10 9 || die 'state is locked'",
        "  jq --arg k \"$1\" --arg v \"$2\" 'if $k == \"switchCount\" then .[$k] = ($v|tonumber) else .[$k] = $v end'"
        " \"$STATE\" > \"$STATE.bluegreen-tmp\" && chmod 600 \"$STATE.bluegreen-tmp\" &&"
        " mv -f \"$STATE.bluegreen-tmp\" \"$STATE\"",
        "}",
        "do_history() {",
        "  exec 9>\"$STATE_LOCK\"; flock -w 10 9 || die 'state is locked'",
        f"  jq -r --argjson n \"${{1:-20}}\" {shlex.quote(history)} \"$STATE\"",
        "}",
    ]


def render_thin_script(t: Topology) -> str:
    """The whole script, for the stack's load balancer (paths rooted like every path)."""
    lb = t.load_balancer
    state = lb.path(t.journal.path)
    name = STATE_SCRIPT.rsplit("/", 1)[-1]
    q = shlex.quote
    return "\n".join([
        "#!/bin/bash",
        f"# {name}: {THIN_MARKER} (stack {t.stack}). The estate's own script is",
        f"# kept beside it as {name}{BACKUP_SUFFIX}. The old commands, on bluegreen's journal:",
        "#   jw-deployment-state.sh get [KEY]         the state (or one key)",
        "#   jw-deployment-state.sh set KEY VALUE     set a key (prod/standby only to what HAProxy serves)",
        "#   jw-deployment-state.sh history [N]       the newest N switches and deploys",
        "#   jw-deployment-state.sh switch [COLOUR] [--emergency] [--reason TEXT]",
        "#                                            move live traffic, as `bluegreen switch` does",
        "set -euo pipefail",
        f"STATE={q(state)}",
        f"STATE_LOCK={q(state_lock_path(state))}",
        *_functions(t),
        *_record(t),
        *_switch(t),
        *_get_set_history(t),
        "case \"${1:-}\" in",
        "  get) shift; do_get \"$@\" ;;",
        "  set) shift; do_set \"$@\" ;;",
        "  history) shift; do_history \"$@\" ;;",
        "  switch) shift; do_switch \"$@\" ;;",
        "  *) echo \"usage: $0 get [KEY] | set KEY VALUE | history [N] | switch [blue|green] [--emergency]"
        " [--reason TEXT]\" >&2; exit 2 ;;",
        "esac",
    ]) + "\n"
