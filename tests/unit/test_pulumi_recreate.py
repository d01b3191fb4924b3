"""`rebuild estate` on a Pulumi stack: `pulumi refresh`, then one `pulumi up` of the whole stack that
replaces what still exists and was named, through the same recording `PulumiCommand` seam as
test_pulumi_seam.py (no Pulumi CLI here)."""

from __future__ import annotations

from pathlib import Path

from bluegreen.hosts.pulumi import PulumiSeam
from tests.unit.test_pulumi_seam import ENV, GREEN_URN, FakePulumi, project, tail_calls

__all__ = ["project"]  # the fixture, used by name

UP = ["--non-interactive", "up", "--yes", "--skip-preview", "--message", "bluegreen: rebuild the estate"]
TAIL = ["--color", "never", "--exec-kind", "auto.local", "--stack", "lab"]


def test_refresh_then_one_up_of_the_whole_stack(project: Path) -> None:
    fake = FakePulumi()
    PulumiSeam(project, "lab", pulumi_command=fake, env=ENV).recreate_estate([])
    ups = [c for c in fake.calls if "up" in c]
    assert fake.calls[1][:2] == ["--non-interactive", "refresh"]
    assert ups == [[*UP, *TAIL]]  # no --target: every container and host configuration
    assert fake.calls[-3:] == tail_calls(fake)


def test_a_named_container_still_in_the_state_is_replaced_and_a_gone_one_is_not_named(project: Path) -> None:
    fake = FakePulumi()
    PulumiSeam(project, "lab", pulumi_command=fake, env=ENV).recreate_estate([134, 999])
    ups = [c for c in fake.calls if "up" in c]
    assert ups == [[*UP, "--replace", GREEN_URN, *TAIL]]
