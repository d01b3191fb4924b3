"""Errors that say what to do next: the lab not running, no --stack and prod unreachable, an unknown
ref, an unknown approval code, a declared colour that lives in the lab's own file; and what `lab up`
says it found and what moves on from there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bluegreen.faces.approval import ApprovalError
from bluegreen.faces.approval_store import approver_grants_dir, pending_codes, read_request
from bluegreen.faces.hints import Situation, next_step
from bluegreen.hosts.providers import declared_in
from bluegreen.lab import found
from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.emergency import reconcile_command
from bluegreen.render.commands import unknown_ref_message

REPO = Path(__file__).resolve().parents[2]
LAB_DOWN = ("loadbalancer (136, 127.0.3.26): connect failed: cannot reach 127.0.3.26:2222 after 3 attempts: "
            "Unable to connect to port 2222 on 127.0.3.26")
PROD_AWAY = "loadbalancer (136, 10.92.3.26): connect failed: cannot reach 10.92.3.26:22 after 3 attempts: " \
            "Network is unreachable"
TOKEN_GONE = "proxmox.tokenFile: cannot read /var/tmp/jw-lab/pve/token: No such file or directory"


@pytest.mark.parametrize(("situation", "says"), [
    (Situation("lab", True, "lab", LAB_DOWN), "the lab is not running"),
    (Situation("lab", True, "lab", TOKEN_GONE), "`make lab-up`"),
    (Situation("lab", True, "lab", "refusing to switch to green: green serves no release"), None),
    (Situation("prod", False, "production", PROD_AWAY), "add `--stack lab`, or `export BLUEGREEN_STACK=lab`"),
    (Situation("prod", False, None, PROD_AWAY), "this ran on stack prod (the default"),
    (Situation("prod", True, "production", PROD_AWAY), None),  # prod named on purpose: its own error says it
    (Situation("prod", False, "production", "the deployment lock (x) is held by y"), None),
    (Situation("prod", False, "production", "stack prod is not complete:\n  - set app.repo: the URL"),
     "whose stack file is not complete yet. On the local lab: add `--stack lab`"),
    (Situation("prod", True, "production", "stack prod is not complete:\n  - set app.repo: the URL"), None),
])
def test_the_next_step_after_a_failure(situation: Situation, says: str | None) -> None:
    hint = next_step(situation)
    if says is None:
        assert hint is None
    else:
        assert hint is not None and says in hint


LISTING = "refs/heads/main\nrefs/heads/production-gold-standard\nrefs/tags/next-v1\nrefs/tags/next-v2\n" \
          "refs/tags/v1\nrefs/tags/v2\n"


@pytest.mark.parametrize(("listing", "says"), [
    (LISTING, "unknown git ref 'v3' in /srv/app.git; it has branches main, production-gold-standard and "
              "tags next-v1, next-v2, v1, v2 (or give a commit sha)"),
    ("refs/heads/main\n", "it has branches main (or give"),
    ("", "it has no branch or tag yet"),
    ("".join(f"refs/tags/t{i:02}\n" for i in range(15)), "tags t00, t01, t02, t03, t04, t05, t06, t07, t08, t09, "
                                                          "t10, t11 and 3 more"),
])
def test_an_unknown_ref_names_the_refs_there_are(listing: str, says: str) -> None:
    assert says in unknown_ref_message("v3", "/srv/app.git", listing)


def test_the_declared_colour_is_named_where_it_really_lives() -> None:
    lab, prod = load_stack(REPO, "lab"), load_stack(REPO, "prod")
    assert lab.active_color_file == "/var/tmp/jw-lab/active-color"
    assert declared_in(lab) == "/var/tmp/jw-lab/active-color"
    assert declared_in(prod) == "stacks/Pulumi.prod.yaml"
    assert reconcile_command(lab, "green").startswith("bluegreen switch --to green --yes --stack lab")
    assert "/var/tmp/jw-lab/active-color" in reconcile_command(lab, "green")
    assert reconcile_command(prod, "green").startswith("pulumi config set bluegreen:activeColor green --stack prod")
    automation_lab = dataclasses.replace(lab, switch=dataclasses.replace(lab.switch, mode="automation"))
    assert reconcile_command(automation_lab, "blue") == "echo blue > /var/tmp/jw-lab/active-color"


def _pending(base: Path, stack: str, *codes: str) -> Path:
    requests = base / stack / "requests"
    requests.mkdir(parents=True)
    (base / stack / "grants").mkdir()
    for code in codes:
        (requests / f"{code}.request.json").write_text("{}")
    return base / stack


def test_an_unknown_approval_code_names_the_stack_searched_and_where_codes_wait(tmp_path: Path) -> None:
    lab = _pending(tmp_path, "lab")
    _pending(tmp_path, "prod", "K7QF-3MXD", "ABCD-EFGH")
    assert pending_codes(tmp_path) == {"prod": ["ABCD-EFGH", "K7QF-3MXD"]}
    with pytest.raises(ApprovalError) as err:
        read_request(lab, "k7qf3mxd", "lab", now=0.0)
    text = str(err.value)
    assert f"unknown for stack lab (searched {lab / 'requests'})" in text
    assert "pending for stack prod: `bluegreen approve K7QF-3MXD --stack prod`" in text
    with pytest.raises(ApprovalError) as err:
        read_request(lab, "MMMM-NNNN", "lab", now=0.0)
    assert "pending there: stack prod: ABCD-EFGH, K7QF-3MXD" in str(err.value)


def test_no_approvals_directory_for_the_stack_says_so_and_where_codes_wait(tmp_path: Path) -> None:
    _pending(tmp_path, "prod", "K7QF-3MXD")
    with pytest.raises(ConfigError) as err:
        approver_grants_dir(tmp_path / "lab", "K7QF-3MXD")
    text = str(err.value)
    assert f"approvals directory {tmp_path / 'lab' / 'grants'} (stack lab): No such file or directory" in text
    assert "scripts/approver-setup.sh" in text and "pending for stack prod" in text
    with pytest.raises(ConfigError, match="no MCP server is waiting for any approval"):
        approver_grants_dir(tmp_path / "nothing" / "lab", "K7QF-3MXD")


# --------------------------------------------------------------------------- what `lab up` says


def test_what_the_lab_directory_holds(tmp_path: Path) -> None:
    known, adopted = tmp_path / "ssh/known_hosts", tmp_path / "adopted/Pulumi.lab.yaml"
    assert found.what_is_here(tmp_path, "legacy-estate", adopted, known) == found.NEW
    known.parent.mkdir()
    known.write_text("")
    assert found.what_is_here(tmp_path, "legacy-estate", adopted, known) == found.OWN
    (tmp_path / "legacy-estate").write_text("")
    assert found.what_is_here(tmp_path, "legacy-estate", adopted, known) == found.LEGACY
    adopted.parent.mkdir()
    adopted.write_text("config: {}\n")
    assert found.what_is_here(tmp_path, "legacy-estate", adopted, known) == found.ADOPTED


NONE: dict[str, str | None] = {"blue": None, "green": None}
BOTH: dict[str, str | None] = {"blue": "20261206-aaaaaaa", "green": "20261206-bbbbbbb"}


@pytest.mark.parametrize(("was", "releases", "live", "reset", "found_says", "now_says", "next_says"), [
    (found.NEW, NONE, "blue", False, "nothing: a new lab", "no release yet", "`make demo`"),
    (found.OWN, NONE, "blue", False, "the lab's own estate", "no release yet",
     "bluegreen --stack lab deploy --ref next-v1 --migrate --yes"),
    (found.LEGACY, NONE, "blue", False, "legacy estate: replaced by a new lab estate", "no release yet", "make demo"),
    (found.ADOPTED, NONE, "blue", False, "adopted: replaced", "answers 503", "make demo"),
    (found.OWN, BOTH, "green", False, "the lab's own estate", "green live (20261206-bbbbbbb), blue standby",
     "bluegreen --stack lab status"),
    (found.OWN, {"blue": "r1", "green": None}, "green", False, "own", "green live (no release)",
     "bluegreen --stack lab switch --yes"),
    (found.OWN, NONE, "blue", True, "own estate: replaced by a new lab estate", "no release yet", "make demo"),
])
def test_lab_up_says_what_it_found_and_what_moves_on(was: str, releases: dict[str, str | None], live: str,
                                                     reset: bool, found_says: str, now_says: str,
                                                     next_says: str) -> None:
    s = found.own_summary(was, releases, live, reset=reset)
    assert found_says in s.found and now_says in s.state and next_says in s.next_step, s


@pytest.mark.parametrize(("was", "reset", "now_says", "next_says"), [
    (found.NEW, False, "not adopted", "bluegreen --stack lab adopt --yes"),
    (found.OWN, True, "not adopted", "bluegreen --stack lab adopt --yes"),
    (found.LEGACY, False, "not adopted", "make lab-reset"),
    (found.ADOPTED, False, "adopted: the lab's stack is now /x/Pulumi.lab.yaml", "up --legacy --reset"),
    (found.ADOPTED, True, "not adopted", "adopt --yes"),  # --reset: a new legacy estate, adopt again
])
def test_lab_up_legacy_says_what_it_found_and_what_moves_on(was: str, reset: bool, now_says: str,
                                                            next_says: str) -> None:
    s = found.legacy_summary(was, Path("/x/Pulumi.lab.yaml"), reset=reset)
    assert now_says in s.state and next_says in s.next_step, s
    assert found.FOUND[was] in s.found


def test_advice_survives_the_scrubbing_of_the_output() -> None:
    """Output is scrubbed of anything shaped like a credential; advice must not be shaped like one
    (it used to read `[REDACTED] PROXMOX_VE_API_TOKEN=[REDACTED] or ...`)."""
    from bluegreen.model.secrets import read_token
    from bluegreen.model.sensitive import SecretSet, redact

    prod = load_stack(REPO, "prod")
    assert prod.proxmox.token_file is None
    with pytest.raises(ConfigError) as err:
        read_token(prod, environ={})
    assert redact(str(err.value), SecretSet()) == str(err.value)
    assert "PROXMOX_VE_API_TOKEN" in str(err.value) and "proxmox.tokenFile" in str(err.value)
