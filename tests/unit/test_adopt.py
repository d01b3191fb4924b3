"""The pure parts of `bluegreen adopt`: PVE config -> stack values, .env, DATABASE_URL, the stack
file rewrite (comments kept, idempotent), the live colour of a hand-written haproxy.cfg."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bluegreen.hosts.haproxy_cfg import color_from_backend_names
from bluegreen.model.config import from_config
from bluegreen.model.ctread import size_in_gb
from bluegreen.model.ctsettings import size_text
from bluegreen.model.dotenv import parse_env
from bluegreen.model.errors import ConfigError
from bluegreen.ops.adopt import (
    REMOVE,
    container_values,
    stack_values_for,
    text_diff,
    update_stack_text,
)
from bluegreen.ops.adopt_app import parse_database_url

HAND_BUILT: dict[str, Any] = {
    "hostname": "jw-blue", "cores": 4, "memory": 4096, "swap": 1024,
    "net0": "name=eth0,bridge=vmbr1,firewall=1,gw=10.92.3.1,hwaddr=bc:24:11:08:47:a3,ip=10.92.3.22/24,type=veth",
    "rootfs": "local-zfs:subvol-132-disk-0,size=32G", "onboot": 1, "startup": "order=2,up=10",
    "features": "nesting=1,keyctl=1", "description": "Blue app\nbuilt by hand\n", "tags": "App;blue",
    "nameserver": "1.1.1.1 8.8.8.8", "searchdomain": "cloudigan.net", "unprivileged": 1,
    "mp0": "local-zfs:subvol-132-disk-1,mp=/data,size=8G,backup=1", "ostype": "debian", "digest": "x",
}
MOUNT_DEFAULTS = {"readOnly": False, "acl": False, "quota": False, "replicate": True, "shared": False}


def test_pve_config_becomes_every_declared_value() -> None:
    v = container_values(132, HAND_BUILT, running=True)
    assert v == {
        "hostname": "jw-blue", "ip": "10.92.3.22/24", "cores": 4, "memory": 4096, "swap": 1024,
        "disk": 32, "datastore": "local-zfs", "bridge": "vmbr1", "gateway": "10.92.3.1",
        "firewall": True, "mac": "BC:24:11:08:47:A3", "dnsServers": ["1.1.1.1", "8.8.8.8"],
        "dnsDomain": "cloudigan.net", "onBoot": True, "started": True, "protection": False,
        "unprivileged": True, "description": "Blue app\nbuilt by hand\n", "tags": ["app", "blue"],
        "startup": {"order": 2, "upDelay": 10}, "features": {"nesting": True, "keyctl": True},
        "osType": "debian",
        "mountPoints": [{"key": "mp0", "volume": "local-zfs:subvol-132-disk-1", "path": "/data",
                         "size": "8G", "backup": True, **MOUNT_DEFAULTS}],
    }


def test_everything_read_returns_is_written() -> None:
    """What a hand-built container has beyond the usual: inherited DNS, a second NIC with IPv6,
    a terabyte mount point with options, a CPU limit, a rate limit, a console mode, devices, env."""
    config = {**{k: v for k, v in HAND_BUILT.items() if k not in ("nameserver", "searchdomain")},
              "net0": HAND_BUILT["net0"] + ",ip6=fd00::22/64,gw6=fd00::1,rate=12.5,mtu=1400,tag=30",
              "net1": "name=eth1,bridge=vmbr9,ip=192.168.9.22/24,firewall=0,hwaddr=bc:24:11:00:00:09",
              "mp0": "local-zfs:subvol-132-disk-1,mp=/data,size=1T,acl=1,quota=1,replicate=0,shared=1,"
                     "mountoptions=noatime;nodev,backup=0,ro=1",
              "cpulimit": "1.5", "cpuunits": 512, "cmode": "shell", "tty": 3, "console": 1,
              "dev0": "/dev/net/tun,mode=0666,uid=0,gid=0,deny-write=1", "env": "TZ=UTC\x00LANG=C.UTF-8",
              "rootfs": "local-zfs:subvol-132-disk-0,size=32G,acl=1,mountoptions=lazytime"}
    v = container_values(132, config, running=True)
    assert v["inheritDns"] is True and "dnsServers" not in v and "dnsDomain" not in v
    assert (v["ip6"], v["gateway6"], v["rate"], v["mtu"], v["vlan"]) == ("fd00::22/64", "fd00::1", 12.5, 1400, 30)
    assert v["extraInterfaces"] == [{"key": "net1", "name": "eth1", "bridge": "vmbr9", "ip": "192.168.9.22/24",
                                     "firewall": False, "mac": "BC:24:11:00:00:09"}]
    assert v["mountPoints"] == [{"key": "mp0", "volume": "local-zfs:subvol-132-disk-1", "path": "/data",
                                 "size": "1T", "backup": False, "readOnly": True, "acl": True, "quota": True,
                                 "replicate": False, "shared": True, "mountOptions": ["noatime", "nodev"]}]
    assert (v["cpuLimit"], v["cpuUnits"]) == (1.5, 512)
    assert v["console"] == {"enabled": True, "mode": "shell", "tty": 3}
    assert v["devices"] == [{"key": "dev0", "path": "/dev/net/tun", "mode": "0666", "uid": 0, "gid": 0,
                             "denyWrite": True}]
    assert v["lxcEnv"] == {"LANG": "C.UTF-8", "TZ": "UTC"}
    assert v["rootfs"] == {"acl": True, "mountOptions": ["lazytime"]}


def test_what_the_program_cannot_declare_is_noted() -> None:
    notes: list[str] = []
    container_values(132, {**HAND_BUILT, "hookscript": "local:snippets/hook.sh",
                           "lxc.idmap": "u 0 100000 65536", "net2": "name=eth2,bridge=vmbr0"},
                     running=True, notes=notes)
    assert any("hook script local:snippets/hook.sh" in n for n in notes)
    assert any("lxc.idmap" in n for n in notes)
    assert any("net0, net2 have gaps" in n for n in notes)


@pytest.mark.parametrize(("change", "key", "expected"), [
    ({"startup": None}, "startup", "none"),            # PVE has none: declared none
    ({"onboot": None}, "onBoot", False),               # unset onboot reads back as false
    ({"features": None}, "features", {}),
    ({"protection": 1}, "protection", True),
    ({"unprivileged": None}, "unprivileged", False),
    ({"description": None}, "description", None),
    ({"startup": "order=1,up=15,down=30"}, "startup", {"order": 1, "upDelay": 15, "downDelay": 30}),
    ({"nameserver": None, "searchdomain": None}, "inheritDns", True),
    ({"searchdomain": None}, "inheritDns", None),  # a nameserver alone is not inherited
])
def test_unset_and_set_pve_values(change: dict[str, Any], key: str, expected: Any) -> None:
    config = {k: v for k, v in {**HAND_BUILT, **change}.items() if v is not None}
    assert container_values(132, config, running=False).get(key) == expected


@pytest.mark.parametrize(("config", "message"), [
    ({**HAND_BUILT, "net0": "name=eth0,bridge=vmbr0,ip=dhcp"}, "static address"),
    ({k: v for k, v in HAND_BUILT.items() if k != "net0"}, "no net0"),
    ({**HAND_BUILT, "rootfs": "local-zfs:subvol-132-disk-0"}, "names no volume and size"),
])
def test_what_adopt_cannot_declare_is_refused_by_name(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        container_values(132, config, running=True)


def test_a_fractional_root_disk_is_rounded_up_and_noted() -> None:
    notes: list[str] = []
    v = container_values(132, {**HAND_BUILT, "rootfs": "local:100/vm-disk.raw,size=1536M"}, running=True,
                         notes=notes)
    assert v["disk"] == 2 and any("1536M is not a whole number of GB" in n for n in notes)


@pytest.mark.parametrize(("text", "gb"), [("16G", 16), ("1T", 1024), ("2048M", 2), ("512M", 0.5), ("x", None)])
def test_sizes(text: str, gb: float | None) -> None:
    assert size_in_gb(text) == gb


@pytest.mark.parametrize(("value", "text"), [(8, "8G"), ("1t", "1T"), ("512M", "512M"), (0, None), ("8X", None),
                                             (True, None), (1.5, None)])
def test_stack_sizes_as_pve_writes_them(value: Any, text: str | None) -> None:
    assert size_text(value) == text


def test_stack_wide_values_are_not_repeated_per_container() -> None:
    found = container_values(132, HAND_BUILT, running=True)
    values = stack_values_for({"id": 132, "name": "jw-blue"}, found,
                              proxmox={"datastore": "local-zfs", "bridge": "vmbr1", "gateway": "10.92.3.1",
                                       "dnsServers": ["1.1.1.1", "8.8.8.8"], "dnsDomain": "cloudigan.net"})
    for key in ("datastore", "bridge", "gateway", "dnsServers", "dnsDomain", "hostname"):
        assert key not in values
    assert values["existing"] is True and values["cores"] == 4


def test_values_pve_no_longer_has_are_removed() -> None:
    inherited = {k: v for k, v in HAND_BUILT.items() if k not in ("nameserver", "searchdomain", "mp0")}
    found = container_values(132, inherited, running=True)
    entry = {"id": 132, "name": "jw-blue", "dnsServers": ["1.1.1.1"], "mountPoints": [{"key": "mp0"}], "sshAlias": "b"}
    values = stack_values_for(entry, found, proxmox={})
    assert values["dnsServers"] is REMOVE and values["mountPoints"] is REMOVE and values["inheritDns"] is True
    assert "sshAlias" not in values  # not adopt's to remove


ENV = """# app settings
export NODE_ENV=production
DATABASE_URL="postgresql://jw_user:p%40ss%23word@10.92.3.21:5432/jw_attendant_scheduler_staging?schema=public"
NEXTAUTH_URL=https://attendant.cloudigan.net   # public
EMPTY=
QUOTED='single # not a comment'
not a line
"""


def test_env_parsing() -> None:
    env = parse_env(ENV)
    assert env["NODE_ENV"] == "production"
    assert env["NEXTAUTH_URL"] == "https://attendant.cloudigan.net"
    assert env["EMPTY"] == ""
    assert env["QUOTED"] == "single # not a comment"
    assert "not a line" not in env and len(env) == 5


def test_database_url_gives_user_and_name_never_the_password() -> None:
    db = parse_database_url(parse_env(ENV)["DATABASE_URL"])
    assert (db.user, db.name, db.host, db.port) == ("jw_user", "jw_attendant_scheduler_staging", "10.92.3.21", 5432)
    assert "p@ss" not in repr(db)


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql://h:5432/db", "postgresql://u:p@h:5432/"])
def test_bad_database_url(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_database_url(url)


LEGACY_CFG = """global
    log /dev/log local0
frontend https_in
    bind 10.92.3.26:443 ssl crt /etc/haproxy/certs/attendant.cloudigan.net.pem
    bind 10.92.3.26:80
    http-request redirect scheme https unless { ssl_fc }
    use_backend jw_green_backend
frontend stats
    bind 127.0.0.1:8404
    default_backend jw_blue_backend
backend jw_blue_backend
    server blue 10.92.3.22:3000 check
backend jw_green_backend
    server green 10.92.3.24:3000 check
"""


def test_live_colour_of_a_hand_written_config() -> None:
    assert color_from_backend_names(LEGACY_CFG) == "green"
    blue = LEGACY_CFG.replace("use_backend jw_green_backend", "use_backend jw_blue_backend")
    assert color_from_backend_names(blue) == "blue"
    # A map-based config does not name one colour: the runtime API must be asked.
    assert color_from_backend_names(
        "frontend f\n    bind :80\n    use_backend %[str(live),map(/m,bk_blue)]\n") is None


STACK = """# The estate (a comment that must survive)
config:
  bluegreen:activeColor: blue   # declared live colour
  bluegreen:containers:
    - {id: 131, name: jw-postgres, role: database, ip: 10.92.3.21/24}
    # the blue app host
    - {id: 132, name: jw-blue, role: app, color: blue, ip: 10.92.3.22/24}
  bluegreen:app:
    repo: REPLACE-ME   # set by adopt
    branch: production-gold-standard
"""


def test_stack_rewrite_keeps_comments_and_is_idempotent() -> None:
    kwargs: dict[str, Any] = {
        "containers": {132: {"cores": 4, "startup": "none", "features": {"nesting": True}, "existing": True}},
        "top": {"activeColor": "green"}, "app": {"repo": "git@github.com:org/app.git"},
        "database": {"user": "jw_user", "name": "jw_db"}}
    new = update_stack_text(STACK, **kwargs)
    for comment in ("# The estate (a comment that must survive)", "# declared live colour",
                    "# the blue app host", "# set by adopt"):
        assert comment in new
    config = yaml.safe_load(new)["config"]
    assert config["bluegreen:activeColor"] == "green"
    assert config["bluegreen:containers"][1] == {
        "id": 132, "name": "jw-blue", "role": "app", "color": "blue", "ip": "10.92.3.22/24", "cores": 4,
        "startup": "none", "features": {"nesting": True}, "existing": True}
    assert config["bluegreen:containers"][0] == {"id": 131, "name": "jw-postgres", "role": "database",
                                                 "ip": "10.92.3.21/24"}
    assert config["bluegreen:app"]["repo"] == "git@github.com:org/app.git"
    assert config["bluegreen:database"] == {"user": "jw_user", "name": "jw_db"}
    # Entries stay one line each (flow style), so the file reads as before.
    assert "    - {id: 132, name: jw-blue" in new
    assert update_stack_text(new, **kwargs) == new
    assert text_diff(new, update_stack_text(new, **kwargs), "f") == ""
    assert "+  bluegreen:activeColor: green" in text_diff(STACK, new, "f")


def test_written_values_are_read_back_by_the_topology() -> None:
    found = container_values(132, HAND_BUILT, running=True)
    entry = {"id": 132, "name": "jw-blue", "role": "app", "color": "blue", **stack_values_for(
        {"name": "jw-blue"}, found, proxmox={})}
    entry["ip"] = "10.92.3.22/24"
    config = {
        "bluegreen:activeColor": "blue",
        "bluegreen:proxmox": {"node": "pve", "datastore": "local-lvm", "gateway": "10.92.3.1",
                              "template": {"file": "t.tar.zst"}, "endpoint": "https://10.92.0.5:8006/"},
        "bluegreen:ssh": {"publicKeys": ["ssh-ed25519 AAAA x"]},
        "bluegreen:app": {"repo": "r", "branch": "b"},
        "bluegreen:containers": [
            {"id": 131, "name": "db", "role": "database", "ip": "10.92.3.21/24"}, entry,
            {"id": 134, "name": "green", "role": "app", "color": "green", "ip": "10.92.3.24/24"},
            {"id": 136, "name": "lb", "role": "loadbalancer", "ip": "10.92.3.26/24"}],
    }
    from bluegreen.model.config import config_getter

    t = from_config(config_getter(config), stack="x", project_dir=".")
    s = t.container(132).settings
    assert (s.on_boot, s.protection, s.firewall, s.mac, s.bridge, s.datastore) == (
        True, False, True, "BC:24:11:08:47:A3", "vmbr1", "local-zfs")
    assert s.startup is not None and (s.startup.order, s.startup.up_delay) == (2, 10)
    assert s.mount_points[0].volume == "local-zfs:subvol-132-disk-1"
    assert t.container(131).settings.on_boot is None  # not given: the default applies


# --------------------------------------------------------------------------- the app and its load balancer


def lab_topology(tmp_path: Any, **app: Any) -> Any:
    import copy
    from pathlib import Path

    from bluegreen.model.config import config_getter

    project = Path(__file__).resolve().parents[2]
    config = copy.deepcopy(dict(yaml.safe_load((project / "stacks/Pulumi.lab.yaml").read_text())["config"]))
    config["bluegreen:secretsDir"] = str(tmp_path / "secrets")
    config["bluegreen:database"]["passwordFile"] = str(tmp_path / "secrets" / "db_password")
    config["bluegreen:app"].update(app)
    config["bluegreen:activeColorFile"] = str(tmp_path / "active-color")
    return from_config(config_getter(config), stack="lab", project_dir=project)


ESTATE_ENV = {
    "DATABASE_URL": "postgresql://jw_scheduler:s3cr%40t@127.0.3.21:5432/jw_db?schema=public&connection_limit=5",
    "PORT": "3000", "HOSTNAME": "127.0.3.22", "NODE_ENV": "production", "NO_HEALTH_ROUTE": "1",
    "NEXTAUTH_URL": "https://attendant.lab", "NEXTAUTH_SECRET": "nx", "EMAIL_SERVER_PASSWORD": "two words",
    "EMAIL_FROM": "Scheduler <s@a.invalid>", "TZ": "America/Chicago",
}


def test_every_env_variable_goes_into_the_stack_secrets_as_files(tmp_path: Any) -> None:
    from bluegreen.ops.adopt_app import AppFindings, AppHostFindings, app_values

    t = lab_topology(tmp_path)
    f = AppFindings(hosts={
        "blue": AppHostFindings("blue", dict(ESTATE_ENV), owners=[("root", "/root/.pm2")]),
        "green": AppHostFindings("green", {**ESTATE_ENV, "HOSTNAME": "127.0.3.24", "ONLY_GREEN": "x"}),
    })
    v = app_values(t, f, "blue", declared={})
    assert v.database == {"user": "jw_scheduler", "name": "jw_db", "urlQuery": "schema=public&connection_limit=5",
                          "passwordFile": str(tmp_path / "secrets" / "database-password")}
    assert v.app == {"deployUser": "root", "pm2Home": "/root/.pm2", "port": 3000, "nodeEnv": "production"}
    assert v.env == {
        "NO_HEALTH_ROUTE": "1", "NEXTAUTH_URL": "https://attendant.lab",
        "NEXTAUTH_SECRET": {"secret": "nextauthSecret", "file": str(tmp_path / "secrets/app-env/NEXTAUTH_SECRET")},
        "EMAIL_SERVER_PASSWORD": {"secret": "emailServerPassword",
                                  "file": str(tmp_path / "secrets/app-env/EMAIL_SERVER_PASSWORD")},
        "EMAIL_FROM": "Scheduler <s@a.invalid>", "TZ": "America/Chicago", "ONLY_GREEN": "x"}
    assert {k: s.reveal() for k, s in v.secret_files.items()} == {
        str(tmp_path / "secrets/database-password"): "s3cr@t",
        str(tmp_path / "secrets/app-env/NEXTAUTH_SECRET"): "nx",
        str(tmp_path / "secrets/app-env/EMAIL_SERVER_PASSWORD"): "two words"}
    assert not any("s3cr" in note or "two words" in note for note in v.notes)
    # Written, then adopted again: the files resolve to the estate's values, so nothing changes.
    v.write_secrets()
    assert oct((tmp_path / "secrets/app-env/NEXTAUTH_SECRET").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "secrets/app-env").stat().st_mode & 0o777) == "0o700"
    from pathlib import Path

    from bluegreen.model.config import config_getter
    from bluegreen.model.secrets import resolve_secrets

    text = Path(t.project_dir, "stacks/Pulumi.lab.yaml").read_text()
    again = yaml.safe_load(update_stack_text(text, containers={}, top={}, app=v.app, database=v.database,
                                             env=v.env))["config"]
    again["bluegreen:secretsDir"] = str(tmp_path / "secrets")
    again["bluegreen:activeColorFile"] = str(tmp_path / "active-color")
    # The lab's generated key lives in the lab's directory: this test must not need a lab.
    key_file = tmp_path / "next_server_actions_key"
    key_file.write_text("k" * 44)
    again["bluegreen:app"]["env"]["NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"]["file"] = str(key_file)
    t2 = from_config(config_getter(again), stack="lab", project_dir=t.project_dir)
    second = app_values(t2, f, "blue", declared=resolve_secrets(t2, environ={}))
    assert second.env == {} and second.secret_files == {}


def test_the_user_that_runs_pm2_is_written_never_invented(tmp_path: Any) -> None:
    from bluegreen.ops.adopt_app import AppFindings, AppHostFindings, app_values

    t = lab_topology(tmp_path)
    none = app_values(t, AppFindings(hosts={"blue": AppHostFindings("blue")}), "blue", {})
    assert "deployUser" not in none.app and any("no PM2 runs the app" in n for n in none.notes)
    other = app_values(t, AppFindings(hosts={"blue": AppHostFindings("blue", owners=[("jw", "/srv/jw/.pm2")])}),
                       "blue", {})
    assert other.app == {"deployUser": "jw", "pm2Home": "/srv/jw/.pm2"}


HAND_WRITTEN = """global
    log /dev/log local0
    tune.ssl.default-dh-param 2048

defaults
    mode http
    timeout client 30s

frontend https_front
    bind 10.92.3.26:80
    bind 10.92.3.26:443 ssl crt /etc/haproxy/certs/site.pem
    use_backend blue_servers

backend blue_servers
    option httpchk GET /
    server blue1 10.92.3.22:3000 check

backend green_servers
    option httpchk GET /
    http-check expect status 200-399
    server green1 10.92.3.24:3000 check

listen stats
    bind *:8404
    stats enable

# The circuit's wiki (hand-added)
frontend wiki_front
    bind 10.92.3.26:8081
    default_backend wiki_servers   # its own container

backend wiki_servers
    server wiki1 10.92.3.28:8000 check
"""


def test_a_hand_written_config_gives_its_health_check_and_its_other_sites() -> None:
    from pathlib import Path

    from bluegreen.hosts.haproxy_cfg import health_check, other_sites
    from bluegreen.model.stackfile import load_stack

    t = load_stack(Path(__file__).resolve().parents[2], "prod")
    assert health_check(HAND_WRITTEN, t, "blue").path == "/"
    assert health_check(HAND_WRITTEN, t, "blue").statuses is None  # HAProxy's default: 2xx and 3xx
    assert health_check(HAND_WRITTEN, t, "green").statuses == "200-399"
    sites = other_sites(HAND_WRITTEN, t)
    # attendant's frontend and colour backends, and a stats listener on our stats port, are ours now
    assert sites.carried == ["frontend wiki_front", "backend wiki_servers"]
    assert sites.text == ("\ndefaults\n    mode http\n    timeout client 30s\n\n# The circuit's wiki (hand-added)\n"
                          "frontend wiki_front\n    bind 10.92.3.26:8081\n    default_backend wiki_servers   # its own "
                          "container\n\nbackend wiki_servers\n    server wiki1 10.92.3.28:8000 check\n")


def test_secrets_never_go_into_the_project(tmp_path: Any) -> None:
    import dataclasses

    from bluegreen.ops.adopt_app import secrets_dir_is_safe

    t = lab_topology(tmp_path)
    with pytest.raises(ConfigError, match="secretsDir"):
        secrets_dir_is_safe(dataclasses.replace(t, secrets_dir=f"{t.project_dir}/secrets"), t.project_dir)
    secrets_dir_is_safe(t, t.project_dir)
