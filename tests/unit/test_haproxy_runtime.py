"""Pure parts of the HAProxy runtime module: command builders and parsers.

Parser inputs are HAProxy 2.6.12's own answers, captured from a running instance (the stat rows
keep the fields that were non-empty; the header is the full 2.6 column list).
"""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from bluegreen.hosts import haproxy, haproxy_cli
from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack

PROJECT_DIR = Path(__file__).resolve().parents[2]

STAT_HEADER = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,"
    "h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,,"
)
HEADER_FIELDS = STAT_HEADER.split(",")


def stat_row(**values: str) -> str:
    """One `show stat` line in the 2.6 column order, fields not given left empty (as HAProxy does)."""
    unknown = set(values) - set(HEADER_FIELDS)
    assert not unknown, unknown
    return ",".join(values.get(name, "") for name in HEADER_FIELDS)


SHOW_STAT = "\n".join([
    "# " + STAT_HEADER,
    stat_row(pxname="pub", svname="FRONTEND", scur="2", stot="4", status="OPEN", type="0",
             hrsp_2xx="3", hrsp_5xx="1", req_tot="4", mode="http"),
    stat_row(pxname="bk_blue", svname="blue", scur="1", stot="4", status="UP", weight="1", type="2",
             check_status="L7OK", check_code="200", hrsp_2xx="3", hrsp_5xx="1", req_tot="4",
             check_desc="Layer7 check passed", addr="127.0.9.1:9001", mode="http"),
    stat_row(pxname="bk_blue", svname="BACKEND", scur="1", stot="4", status="UP", weight="1", type="1",
             hrsp_2xx="3", hrsp_5xx="1", req_tot="4", mode="http", algo="roundrobin"),
    stat_row(pxname="bk_green", svname="green", scur="0", stot="0", status="DOWN", weight="1", type="2",
             check_status="L4CON", hrsp_5xx="0", req_tot="0", last_chk="Connection refused",
             check_desc="Layer4 connection problem", addr="127.0.9.1:9002", mode="http"),
    stat_row(pxname="bk_green", svname="BACKEND", scur="0", stot="0", status="DOWN", weight="0", type="1",
             hrsp_5xx="0", req_tot="0", mode="http", algo="roundrobin"),
    "",
])

SHOW_MAP = "0x5561843885a0 live bk_blue\n0x556184388630 preview bk_green\n"

SHOW_PROC = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
7746            master          1 [failed: 0]   0d00h00m12s     2.6.12-1+deb12u4
# workers
7909            worker          0               0d00h00m00s     2.6.12-1+deb12u4
# programs
"""

SHOW_PROC_FAILED = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
7746            master          2 [failed: 1]   0d00h00m13s     2.6.12-1+deb12u4
# workers
7909            worker          1               0d00h00m01s     2.6.12-1+deb12u4
# programs
"""

SHOW_PROC_DRAINING = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
26058           master          1 [failed: 0]   0d00h00m02s     2.6.12-1+deb12u4
# workers
26387           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
26060           worker          1               0d00h00m02s     2.6.12-1+deb12u4
# programs
"""

SHOW_SERVERS_STATE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port \
srv_check_addr srv_agent_addr srv_agent_port
3 bk_blue 1 blue 127.0.9.1 2 0 1 1 0 15 3 4 6 0 0 0 - 9001 - 0 0 - - 0
4 bk_green 1 green 127.0.9.1 2 0 1 1 0 1 0 2 6 0 0 0 - 9002 - 0 0 - - 0
"""

HAPROXY_C_REJECTION = """\
[NOTICE]   (7924) : haproxy version is 2.6.12-1+deb12u4
[NOTICE]   (7924) : path to executable is /usr/sbin/haproxy
[ALERT]    (7924) : config : parsing [/etc/haproxy/haproxy.cfg:18] : unknown keyword 'bogus' in \
'backend' section
[ALERT]    (7924) : config : Error(s) found in configuration file : /etc/haproxy/haproxy.cfg
[ALERT]    (7924) : config : Fatal errors found in configuration.
"""


# --------------------------------------------------------------------------- builders


def test_map_commands_name_the_map_file_key_and_backend() -> None:
    assert haproxy_cli.set_map("/etc/haproxy/live-color.map", "live", "bk_green") == \
        "set map /etc/haproxy/live-color.map live bk_green"
    assert haproxy_cli.add_map("/m.map", "preview", "bk_blue") == "add map /m.map preview bk_blue"
    assert haproxy_cli.show_map("/etc/haproxy/live-color.map") == "show map /etc/haproxy/live-color.map"


@pytest.mark.parametrize("map_path, key, value", [
    ("/etc/haproxy/live color.map", "live", "bk_blue"),
    ("/m.map", "live;show", "bk_blue"),
    ("/m.map", "live", "bk_blue; shutdown sessions"),
    ("/m.map", "live", ""),
])
def test_map_commands_refuse_words_the_cli_would_split(map_path: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="cannot be passed to the HAProxy CLI"):
        haproxy_cli.set_map(map_path, key, value)


def test_routing_entries_send_preview_to_the_other_colour() -> None:
    assert haproxy_cli.routing_entries("green") == {"live": "bk_green", "preview": "bk_blue"}
    assert haproxy_cli.routing_entries("blue") == {"live": "bk_blue", "preview": "bk_green"}
    assert haproxy_cli.color_of("bk_green") == "green"
    assert haproxy_cli.color_of("bk_purple") is None
    with pytest.raises(ConfigError, match="unknown colour 'purple'"):
        haproxy_cli.routing_entries("purple")


def test_runtime_command_is_one_socat_per_command_each_followed_by_the_marker() -> None:
    line = haproxy_cli.runtime_command("/run/haproxy/admin.sock", ["show map /m.map", "show stat"], timeout=3)
    assert line.startswith("set -o pipefail; ")
    pipelines = line[len("set -o pipefail; "):].split(" && ")
    assert len(pipelines) == 4
    for pipeline, command in zip(pipelines[0::2], ["show map /m.map", "show stat"], strict=True):
        printf, socat = (shlex.split(part) for part in pipeline.split(" | "))
        assert printf == ["printf", "%s\\n", command]
        assert socat == ["socat", "-T", "3", "-t", "3", "-", "UNIX-CONNECT:/run/haproxy/admin.sock"]
    assert pipelines[1::2] == [f"echo {haproxy_cli.RESPONSE_END}"] * 2


def test_runtime_command_line_runs_in_bash_and_answers_split_per_command(tmp_path: Path) -> None:
    # Real bash and socat: a socket nobody listens on stops the chain with socat's own complaint.
    line = haproxy_cli.runtime_command(str(tmp_path / "no.sock"), ["show proc"])
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert haproxy_cli.split_answers(result.stdout) == []
    assert "No such file or directory" in result.stderr


@pytest.mark.parametrize("socket_path", ["relative.sock", "/run/a,b.sock", "/run/a:b.sock", "/run/a b"])
def test_runtime_command_refuses_socket_paths_socat_would_misread(socket_path: str) -> None:
    with pytest.raises(ConfigError, match="socket path"):
        haproxy_cli.runtime_command(socket_path, ["show proc"])


@pytest.mark.parametrize("command", ["show proc\nreload", "show map /m.map; show stat"])
def test_runtime_command_refuses_smuggled_commands(command: str) -> None:
    with pytest.raises(ConfigError, match="one command per line"):
        haproxy_cli.runtime_command("/run/admin.sock", [command])


def test_start_command_runs_master_worker_daemon_with_master_socket() -> None:
    paths = haproxy_cli.HaproxyPaths(config="/etc/haproxy/haproxy.cfg", map="/etc/haproxy/live-color.map",
                            admin_socket="/run/haproxy/admin.sock", master_socket="/run/haproxy/master.sock",
                            pid_file="/run/haproxy.pid")
    mkdir, start = haproxy_cli.start_command(paths).split(" && ")
    assert shlex.split(mkdir) == ["mkdir", "-p", "/run", "/run/haproxy"]
    assert shlex.split(start) == ["haproxy", "-W", "-S", "/run/haproxy/master.sock,mode,600",
                                  "-f", "/etc/haproxy/haproxy.cfg", "-p", "/run/haproxy.pid", "-D"]
    assert shlex.split(haproxy_cli.check_config_command("/etc/haproxy/x y.cfg")) == \
        ["haproxy", "-c", "-f", "/etc/haproxy/x y.cfg"]


def test_paths_are_rooted_per_host_and_systemd_only_on_real_hosts() -> None:
    lab = haproxy_cli.HaproxyPaths.from_topology(load_stack(PROJECT_DIR, "lab"))
    assert lab.config == "/var/tmp/jw-lab/ct136/etc/haproxy/haproxy.cfg"
    assert lab.admin_socket == "/var/tmp/jw-lab/ct136/run/haproxy/admin.sock"
    assert lab.service is None
    prod = haproxy_cli.HaproxyPaths.from_topology(load_stack(PROJECT_DIR, "prod"))
    assert prod.config == "/etc/haproxy/haproxy.cfg"
    assert prod.master_socket == "/run/haproxy/master.sock"
    assert prod.service == "haproxy"
    assert haproxy_cli.HaproxyPaths.from_props(prod.to_props()) == prod
    props = prod.to_props()
    del props["master_socket"]
    with pytest.raises(ConfigError, match="master_socket"):
        haproxy_cli.HaproxyPaths.from_props(props)


# --------------------------------------------------------------------------- parsers


def test_split_answers_drops_the_closing_empty_line_of_each_answer() -> None:
    end = haproxy_cli.RESPONSE_END
    stdout = f"{SHOW_MAP}\n{end}\n\n{end}\nentry not found.\n\n{end}\n"
    assert haproxy_cli.split_answers(stdout) == [SHOW_MAP.rstrip("\n"), "", "entry not found."]


def test_show_map_parses_key_and_value() -> None:
    assert haproxy_cli.parse_show_map(SHOW_MAP) == {"live": "bk_blue", "preview": "bk_green"}
    assert haproxy_cli.parse_show_map("") == {}


def test_show_map_error_text_is_an_unexpected_answer() -> None:
    with pytest.raises(haproxy_cli.UnexpectedAnswer, match="Unknown map identifier"):
        haproxy_cli.parse_show_map("Unknown map identifier. Please use #<id> or <file>.\n")


def test_stat_csv_gives_backends_servers_and_counters() -> None:
    snapshot = haproxy_cli.parse_stat_csv(SHOW_STAT)
    assert set(snapshot.frontends) == {"pub"}
    assert set(snapshot.backends) == {"bk_blue", "bk_green"}
    blue, green = snapshot.backends["bk_blue"], snapshot.backends["bk_green"]
    assert (blue.status, blue.up, blue.color, blue.requests_total, blue.hrsp_5xx, blue.current_sessions) == \
        ("UP", True, "blue", 4, 1, 1)
    assert [(s.name, s.status, s.check_status, s.address, s.up) for s in blue.servers] == \
        [("blue", "UP", "L7OK", "127.0.9.1:9001", True)]
    assert (green.status, green.up, green.servers_up) == ("DOWN", False, 0)
    assert green.servers[0].check_description == "Layer4 connection problem"
    assert (snapshot.requests_total, snapshot.hrsp_5xx_total, snapshot.current_sessions) == (4, 1, 2)


def test_stat_csv_without_its_header_is_an_unexpected_answer() -> None:
    with pytest.raises(haproxy_cli.UnexpectedAnswer):
        haproxy_cli.parse_stat_csv("Permission denied\n")


def test_backend_summary_is_plain_json() -> None:
    summary = haproxy.backend_summary(haproxy_cli.parse_stat_csv(SHOW_STAT).backends["bk_green"])
    assert summary["status"] == "DOWN"
    assert summary["servers"] == [{"name": "green", "status": "DOWN", "check": "L4CON",
                                   "check_description": "Layer4 connection problem",
                                   "address": "127.0.9.1:9002"}]


def test_servers_state_by_column_name() -> None:
    rows = haproxy_cli.parse_servers_state(SHOW_SERVERS_STATE)
    assert [(r["be_name"], r["srv_name"], r["srv_port"], r["srv_op_state"]) for r in rows] == \
        [("bk_blue", "blue", "9001", "2"), ("bk_green", "green", "9002", "2")]


def test_show_proc_after_a_good_reload() -> None:
    table = haproxy_cli.parse_show_proc(SHOW_PROC)
    assert (table.master.pid, table.reloads, table.failed_reloads) == (7746, 1, 0)
    assert table.worker_pids == {7909}
    assert table.old_workers == ()


def test_show_proc_counts_failed_reloads() -> None:
    table = haproxy_cli.parse_show_proc(SHOW_PROC_FAILED)
    assert (table.reloads, table.failed_reloads) == (2, 1)
    assert [w.reloads for w in table.workers] == [1]


def test_show_proc_lists_workers_still_draining_apart() -> None:
    table = haproxy_cli.parse_show_proc(SHOW_PROC_DRAINING)
    assert table.worker_pids == {26387}
    assert [w.pid for w in table.old_workers] == [26060]


def test_show_proc_without_master_is_an_unexpected_answer() -> None:
    with pytest.raises(haproxy_cli.UnexpectedAnswer):
        haproxy_cli.parse_show_proc("Unknown command.\n")


_LAB_PATHS = haproxy_cli.HaproxyPaths.from_topology(load_stack(PROJECT_DIR, "lab"))


class _Master:
    """A master CLI seen through the executor: the answers `show proc` gets, one per call."""

    host = "lb"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked = 0

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None) -> object:
        from bluegreen.hosts.executor import CommandResult

        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return CommandResult(command, 0, f"{answer}{haproxy_cli.RESPONSE_END}\n", "", 0.0)


@pytest.mark.parametrize(("answers", "asked"), [
    ([SHOW_PROC], 1),
    (["", "\n", SHOW_PROC], 3),  # a master re-executing itself closes the CLI without a word
])
def test_show_proc_asks_again_while_the_master_answers_nothing(answers: list[str], asked: int) -> None:
    master = _Master(answers)
    table = haproxy.show_proc_settled(master, _LAB_PATHS, within=5)  # type: ignore[arg-type]
    assert table.master.pid == haproxy_cli.parse_show_proc(SHOW_PROC).master.pid and master.asked == asked


def test_a_master_silent_past_the_settle_time_is_an_error_that_says_so() -> None:
    master = _Master([""])
    with pytest.raises(haproxy.MasterNotReady, match="closed its CLI without an answer"):
        haproxy.show_proc_settled(master, _LAB_PATHS, within=0.3)  # type: ignore[arg-type]
    assert master.asked >= 2


def test_config_errors_keep_haproxys_alerts_only() -> None:
    message = haproxy_cli.config_errors(HAPROXY_C_REJECTION)
    assert "unknown keyword 'bogus' in 'backend' section" in message
    assert "NOTICE" not in message
    assert haproxy_cli.config_errors("something else broke\n") == "something else broke"


@pytest.mark.parametrize(("bind", "expected"), [
    ("bind 127.0.3.26:80", {("127.0.3.26", 80)}),
    ("bind 127.0.3.26:8080 ssl crt /x.pem", {("127.0.3.26", 8080)}),
    ("bind ipv4@127.0.3.26:2222", {("127.0.3.26", 2222)}),
    ("bind tcp4@127.0.3.26:81 name x", {("127.0.3.26", 81)}),
    ("bind *:443 ssl crt /x.pem", {(haproxy_cli.WILDCARD, 443)}),
    ("bind :8404", {(haproxy_cli.WILDCARD, 8404)}),
    ("bind 0.0.0.0:80", {(haproxy_cli.WILDCARD, 80)}),
    ("bind :::443 v4v6", {(haproxy_cli.WILDCARD, 443)}),
    ("bind ipv6@[::1]:8443", {("[::1]", 8443)}),
    ("bind 127.0.3.26:80,127.0.3.27:81", {("127.0.3.26", 80), ("127.0.3.27", 81)}),
    ("bind 127.0.3.26:9000-9002", {("127.0.3.26", 9000), ("127.0.3.26", 9001), ("127.0.3.26", 9002)}),
    ("bind unix@/run/x.sock", set()),
    ("bind fd@${FD}", set()),
    ("bind quic4@:443", set()),
    ("# bind 10.0.0.1:22 is a comment", set()),
])
def test_tcp_binds_reads_every_tcp_listener_form(bind: str, expected: set[tuple[str, int]]) -> None:
    assert haproxy_cli.tcp_binds(f"frontend a\n    {bind}\n") == expected


def test_port_check_is_a_real_connect_attempt() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        taken = subprocess.run(["bash", "-c", haproxy_cli.port_in_use_command("127.0.0.1", port)], timeout=30)
    free = subprocess.run(["bash", "-c", haproxy_cli.port_in_use_command("127.0.0.1", port)], timeout=30,
                          capture_output=True)
    assert taken.returncode == 0
    assert free.returncode != 0


def test_port_check_of_a_wildcard_listener_sees_any_address() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        taken = subprocess.run(["bash", "-c", haproxy_cli.port_in_use_command(haproxy_cli.WILDCARD, port)],
                               timeout=30)
    free = subprocess.run(["bash", "-c", haproxy_cli.port_in_use_command(haproxy_cli.WILDCARD, port)],
                          timeout=30)
    assert taken.returncode == 0
    assert free.returncode != 0


# A fake socat playing HAProxy's admin socket: `show backend` from $BACKENDS, a map kept in
# $STATE (one `key value` per line), `set map` answers nothing (or "entry not found."),
# `show map` answers `0x.. key value` lines then an empty line, as HAProxy 2.6 does.
FAKE_SOCAT = r"""#!/bin/bash
read -r cmd
echo "$cmd" >> "$LOG"
if [ -n "$REFUSE" ] && [[ "$cmd" == *"$REFUSE"* ]]; then printf 'Refused by the test.\n\n'; exit 0; fi
case "$cmd" in
  'show backend') printf '%s\n\n' "$BACKENDS";;
  'show map '*) awk '{printf "0x55d5c0e3f0a0 %s %s\n", $1, $2} END {print ""}' "$STATE";;
  'set map '*) set -- $cmd
     if grep -q "^$4 " "$STATE"; then sed -i "s/^$4 .*/$4 $5/" "$STATE"; echo; else printf 'entry not found.\n\n'; fi;;
  'add map '*) set -- $cmd; echo "$4 $5" >> "$STATE"; echo;;
esac
"""


def _run_flip(tmp_path: Path, *, backends: str, state: str, color: str = "green",
              refuse: str = "") -> subprocess.CompletedProcess[str]:
    import os
    import stat

    from bluegreen.hosts.haproxy_cli import flip_script, routing_entries

    fake = tmp_path / "socat"
    fake.write_text(FAKE_SOCAT)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "state").write_text(state)
    map_file = tmp_path / "live.map"
    script = flip_script("/run/haproxy/admin.sock", str(map_file), routing_entries(color),
                         f"live bk_{color}\npreview bk_{'blue' if color == 'green' else 'green'}\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "BACKENDS": backends,
           "STATE": str(tmp_path / "state"), "LOG": str(tmp_path / "sent"), "REFUSE": refuse}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_the_flip_refuses_a_missing_backend_before_touching_the_map(tmp_path: Path) -> None:
    from bluegreen.hosts.haproxy_cli import MISSING_BACKEND_EXIT

    missing = _run_flip(tmp_path, backends="# name\nbk_blue", state="live bk_blue\npreview bk_green\n")
    assert missing.returncode == MISSING_BACKEND_EXIT and "missing backend bk_green" in missing.stderr
    assert (tmp_path / "sent").read_text().splitlines() == ["show backend"]  # nothing was set
    assert not (tmp_path / "live.map").exists()


def test_the_flip_and_the_map_file_are_one_step(tmp_path: Path) -> None:
    """Runtime and file change in the same script: the file says what HAProxy then routes by."""
    from bluegreen.hosts.haproxy_cli import MAP_FILE_WRITTEN

    map_file = tmp_path / "live.map"
    ok = _run_flip(tmp_path, backends="# name\nbk_blue\nbk_green", state="live bk_blue\npreview bk_green\n")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "sent").read_text().splitlines() == [
        "show backend", f"show map {map_file}", f"set map {map_file} live bk_green",
        f"set map {map_file} preview bk_blue", f"show map {map_file}"]
    assert map_file.read_text() == "live bk_green\npreview bk_blue\n"
    answers = haproxy_cli.split_answers(ok.stdout)
    assert haproxy_cli.parse_show_map(answers[0]) == {"live": "bk_blue", "preview": "bk_green"}
    assert haproxy_cli.parse_show_map(answers[1]) == {"live": "bk_green", "preview": "bk_blue"}
    assert answers[2] == MAP_FILE_WRITTEN


def test_the_flip_adds_a_key_the_map_lacks(tmp_path: Path) -> None:
    ok = _run_flip(tmp_path, backends="bk_blue\nbk_green", state="live bk_blue\n")
    assert ok.returncode == 0, ok.stderr
    assert f"add map {tmp_path / 'live.map'} preview bk_blue" in (tmp_path / "sent").read_text()
    assert (tmp_path / "live.map").read_text() == "live bk_green\npreview bk_blue\n"


def test_a_refused_flip_still_leaves_the_file_saying_what_haproxy_routes_by(tmp_path: Path) -> None:
    """A half-taken flip (live set, preview refused): the file follows the runtime, never the wish."""
    from bluegreen.hosts.haproxy_cli import REFUSED_EXIT

    (tmp_path / "live.map").write_text("live bk_blue\npreview bk_green\n")
    refused = _run_flip(tmp_path, backends="bk_blue\nbk_green", state="live bk_blue\npreview bk_green\n",
                        refuse="preview bk_blue")
    assert refused.returncode == REFUSED_EXIT and "Refused by the test" in refused.stderr
    assert (tmp_path / "live.map").read_text() == "live bk_green\npreview bk_green\n"


def test_a_flip_to_the_live_colour_leaves_a_map_file_that_says_it_alone(tmp_path: Path) -> None:
    from bluegreen.hosts.haproxy_cli import MAP_FILE_UNCHANGED

    map_file = tmp_path / "live.map"
    map_file.write_text("live bk_green\npreview bk_blue\n")
    before = map_file.stat().st_mtime_ns
    again = _run_flip(tmp_path, backends="bk_blue\nbk_green", state="live bk_green\npreview bk_blue\n")
    assert again.returncode == 0, again.stderr
    assert haproxy_cli.split_answers(again.stdout)[2] == MAP_FILE_UNCHANGED
    assert map_file.stat().st_mtime_ns == before
