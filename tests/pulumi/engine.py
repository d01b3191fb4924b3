"""A stand-in for the Pulumi engine: what `pulumi up` and `pulumi refresh` do with what the program
registers, as pulumi/pulumi's step generator does it (no Pulumi CLI can be installed here).

Read from pulumi/pulumi at 1b5949891b3cefcb9974752b24a5ecef0acc86c8 (3.259+), with the version
gates of the CHANGELOG; the lines cited are in `pkg/resource/deploy/step_generator.go` unless said:

- **import** (1102-1196): a goal with an import id is imported when there is no old state, or when
  the recorded import id (else the id) differs from it: the provider reads the resource and the read
  becomes the old state; an import over an existing state is an import *replacement*, and the old
  state is deleted at the end of the run (`NewReplaceStep(..., pendingDelete=true)`).
  Before 3.174 an import whose inputs (after `ignore_changes`) differ from the read fails ("inputs to
  import do not match"); since 3.174 the run goes on to an ordinary diff, and so an update
  (`continueStepsFromImport`, 1244). Before 3.252 the state after an import records no import id
  (pulumi/pulumi#23834, `ImportID: new.ImportID`, 1161), so the next run imports again.
- **ignore_changes** (`processIgnoreChanges`, 3076): each ignored path of the new inputs is reset to
  the old inputs' value, or removed when the old inputs have none (`PropertyPath.Reset`).
- **targets** (`isTargetedForUpdate`, 158; "Case 3"/"Case 4", 1536-1781): an untargeted resource keeps
  its old state (a same step), an untargeted new one is not created (a skipped create), and a targeted
  resource depending on a skipped create fails the run. `--target-dependents` adds the resources that
  depend on targeted ones.
- **replacement** (1940-2165): a `--replace` target, a diff with replace keys, or a resource in whose
  `replace_with` a replaced resource is (2895-2905, >= 3.207) is replaced; refused for a protected one
  and, in an update, for a goal that still has an import id ("previously-imported resources that
  still specify an ID may not be replaced", 1992); delete-before-replace deletes first. A delete keeps
  the resource when the *old* state has `retain_on_delete` (step.go, DeleteStep.Apply, 661).
- **state writes**: the new state takes the goal's options (`retainOnDelete`, `protect`, `importID` =
  the goal's import id, `ImportID: goal.ID` 827), also for a same step (pkg/backend/snapshot.go, mustWrite).
- **dynamic providers** diff the recorded *outputs* with the new inputs (sdk/python/lib/pulumi/dynamic/
  __main__.py, `Diff`: `olds = request.olds`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .conftest import SECRET_SIG, SIG_KEY, ProgramRun, Registration

ROOT_STACK = "pulumi:pulumi:Stack"
PROVIDER_PREFIX = "pulumi:providers:"


class EngineError(Exception):
    """The run failed (what the CLI prints as `error:`); steps made before it stand."""


@dataclass
class Diff:
    changes: bool
    replace_keys: list[str] = field(default_factory=list)
    changed_keys: list[str] = field(default_factory=list)


class Provider(Protocol):
    def read(self, id_: str, inputs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """(id, inputs, outputs) of the resource now, or None when it does not exist."""

    def diff(self, id_: str, old_inputs: Mapping[str, Any], old_outputs: Mapping[str, Any],
             new_inputs: Mapping[str, Any], ignore_changes: Sequence[str]) -> Diff: ...

    def create(self, urn: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]: ...

    def update(self, id_: str, old_outputs: Mapping[str, Any], new_inputs: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, id_: str, outputs: Mapping[str, Any]) -> None: ...


@dataclass
class Goal:
    """One registration, with its real URN (the mock monitor's URNs carry the root stack's type)."""

    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    import_id: str
    ignore_changes: list[str]
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    replace_with: list[str]
    dependencies: list[str]


@dataclass
class Resource:
    """One resource of the state (apitype.ResourceV3's fields that matter here)."""

    urn: str
    type: str
    custom: bool
    id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    protect: bool = False
    retain_on_delete: bool = False
    import_id: str = ""
    replace_with: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    pending_replacement: bool = False

    def export(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urn": self.urn, "type": self.type, "custom": self.custom,
                               "inputs": self.inputs, "outputs": self.outputs}
        for key, value in (("id", self.id), ("parent", self.parent), ("protect", self.protect),
                           ("retainOnDelete", self.retain_on_delete), ("importID", self.import_id),
                           ("replaceWith", self.replace_with), ("dependencies", self.dependencies),
                           ("pendingReplacement", self.pending_replacement)):
            if value:
                out[key] = value
        return out


@dataclass
class Step:
    op: str  # import, import-replacement, create, update, replace, delete, same, read, skipped-create
    urn: str
    detail: str = ""

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


# --------------------------------------------------------------------------- registrations


def plain(value: Any) -> Any:
    """Secrets unwrapped, the dynamic provider's pickled `__provider` dropped."""
    if isinstance(value, Mapping):
        if value.get(SIG_KEY) == SECRET_SIG:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items() if k != "__provider"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def goals(run: ProgramRun, *, stack: str, project: str) -> list[Goal]:
    """The program's registrations as the engine receives them, with real URNs: `urn:pulumi:<stack>::
    <project>::<parent types and own type, the root stack left out>::<name>`."""
    by_mock = {r.urn: r for r in run.registrations}
    qualified: dict[str, str] = {}

    def qualified_type(reg: Registration) -> str:
        if reg.urn not in qualified:
            parent = by_mock.get(reg.parent)
            prefix = "" if parent is None or parent.type == ROOT_STACK else qualified_type(parent) + "$"
            qualified[reg.urn] = prefix + reg.type
        return qualified[reg.urn]

    def real(mock: str) -> str:
        reg = by_mock.get(mock)
        return f"urn:pulumi:{stack}::{project}::{qualified_type(reg)}::{reg.name}" if reg else mock

    found = []
    for reg in run.registrations:
        if reg.type.startswith(PROVIDER_PREFIX):
            continue
        parent = by_mock.get(reg.parent)
        found.append(Goal(
            urn=real(reg.urn), type=reg.type, name=reg.name,
            parent=None if parent is None or parent.type == ROOT_STACK else real(reg.parent),
            custom=reg.custom, inputs=plain(reg.inputs), import_id=reg.import_id,
            ignore_changes=list(reg.ignore_changes), protect=reg.protect, retain_on_delete=reg.retain_on_delete,
            delete_before_replace=reg.delete_before_replace, replace_with=[real(u) for u in reg.replace_with],
            dependencies=[real(u) for u in reg.dependencies if u in by_mock]))
    return found


def ignore(inputs: Mapping[str, Any], old: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """`processIgnoreChanges`: each path reset to the old value, or removed when the old has none."""
    result = copy.deepcopy(dict(inputs))
    for path in paths:
        parts = path.split(".")
        src: Any = old
        dst: Any = result
        for part in parts[:-1]:
            src = src.get(part) if isinstance(src, Mapping) else None
            dst = dst.get(part) if isinstance(dst, dict) else None
        if not isinstance(dst, dict):
            continue
        if isinstance(src, Mapping) and parts[-1] in src:
            dst[parts[-1]] = copy.deepcopy(src[parts[-1]])
        else:
            dst.pop(parts[-1], None)
    return result


# --------------------------------------------------------------------------- the engine


class Engine:
    def __init__(self, providers: Mapping[str, Provider], *, version: tuple[int, int, int] = (3, 272, 0)) -> None:
        self.providers = dict(providers)
        self.version = version
        self.state: dict[str, Resource] = {}
        self.runs: list[list[Step]] = []

    # -- what the CLI shows ---------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        return {"manifest": {}, "resources": [r.export() for r in self.state.values()]}

    @staticmethod
    def summary(steps: Sequence[Step]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in steps:
            op = {"import-replacement": "import", "skipped-create": "same"}.get(step.op, step.op)
            counts[op] = counts.get(op, 0) + 1
        return counts

    def provider(self, type_: str) -> Provider:
        if type_ not in self.providers:
            raise EngineError(f"no provider for {type_}")
        return self.providers[type_]

    # -- refresh ----------------------------------------------------------------------------

    def refresh(self, targets: Sequence[str] = ()) -> list[Step]:
        steps = []
        for urn, res in list(self.state.items()):
            if not res.custom or (targets and urn not in targets):
                continue
            found = self.provider(res.type).read(res.id, res.inputs)
            if found is None:
                del self.state[urn]
                steps.append(Step("delete", urn, "gone"))
                continue
            _, inputs, outputs = found
            changed = outputs != res.outputs
            res.inputs, res.outputs = inputs, outputs
            steps.append(Step("update" if changed else "same", urn, "refresh"))
        self.runs.append(steps)
        return steps

    # -- up -----------------------------------------------------------------------------------

    def up(self, program: Sequence[Goal], *, targets: Sequence[str] = (), replace: Sequence[str] = (),
           target_dependents: bool = False) -> list[Step]:
        run = _Run(self, targets, replace, target_dependents)
        self.runs.append(run.steps)
        for goal in program:
            run.register(goal)
        run.finish({g.urn for g in program})
        return run.steps


class _Run:
    def __init__(self, engine: Engine, targets: Sequence[str], replace: Sequence[str],
                 target_dependents: bool) -> None:
        self.e = engine
        self.targets = set(targets)
        self.actual = set(targets)
        self.replace = set(replace)
        self.target_dependents = target_dependents
        self.steps: list[Step] = []
        self.replaced: set[str] = set()
        self.skipped: set[str] = set()
        self.pending_deletes: list[Resource] = []
        self.imported_now = False

    def targeted(self, goal: Goal) -> bool:
        if not self.targets:
            return True
        if goal.urn in self.targets:
            return True
        if self.target_dependents and any(d in self.actual for d in (*goal.dependencies, goal.parent or "")):
            self.actual.add(goal.urn)
            return True
        return False

    def register(self, goal: Goal) -> None:
        old = self.e.state.get(goal.urn)
        self.imported_now = False
        if goal.custom and goal.import_id and (old is None or (old.import_id or old.id) != goal.import_id):
            old = self.import_(goal, old)  # even for an untargeted resource: the import comes first
            self.imported_now = True
        if not self.targeted(goal):
            if old is None:
                self.skipped.add(goal.urn)
                self.steps.append(Step("skipped-create", goal.urn))
            else:
                self.steps.append(Step("same", goal.urn, "untargeted"))
            return
        missing = [d for d in goal.dependencies if d in self.skipped]
        if missing:
            raise EngineError(f"resource {goal.urn} depends on {missing[0]}, which is not targeted and was not "
                              "created (untargeted create)")
        if not goal.custom:
            if old is None:
                self.e.state[goal.urn] = Resource(goal.urn, goal.type, False, parent=goal.parent)
            self.steps.append(Step("same" if old else "create", goal.urn))
            return
        if old is None:
            self.create(goal)
            return
        self.diff_and_apply(goal, old)

    def import_(self, goal: Goal, old: Resource | None) -> Resource:
        found = self.e.provider(goal.type).read(goal.import_id, None)
        if found is None:
            raise EngineError(f"resource '{goal.import_id}' does not exist")
        id_, inputs, outputs = found
        if self.e.version < (3, 174, 0):
            news = ignore(goal.inputs, inputs, goal.ignore_changes)
            diff = self.e.provider(goal.type).diff(id_, inputs, outputs, news, goal.ignore_changes)
            if diff.changes:
                raise EngineError(f"inputs to import do not match the existing resource: {diff.changed_keys}")
        recorded = goal.import_id if self.e.version >= (3, 252, 0) else ""
        imported = Resource(goal.urn, goal.type, True, id_, inputs, outputs, goal.parent, goal.protect,
                            goal.retain_on_delete, recorded, goal.replace_with, goal.dependencies)
        if old is not None:
            self.steps.append(Step("import-replacement", goal.urn, goal.import_id))
            self.pending_deletes.append(old)  # the old copy is deleted at the end of the run
        else:
            self.steps.append(Step("import", goal.urn, goal.import_id))
        self.e.state[goal.urn] = imported
        return imported

    def create(self, goal: Goal) -> None:
        id_, outputs = self.e.provider(goal.type).create(goal.urn, goal.inputs)
        self.e.state[goal.urn] = self.new_state(goal, id_, goal.inputs, outputs)
        self.steps.append(Step("create", goal.urn))

    def new_state(self, goal: Goal, id_: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Resource:
        # After an import in this run the state goes on from the import's (`newnew`, 1137-1178),
        # whose import id was "" before 3.252; otherwise the goal's (`ImportID: goal.ID`, 827).
        recorded = self.e.state[goal.urn].import_id if self.imported_now else goal.import_id
        return Resource(goal.urn, goal.type, True, id_, dict(inputs), dict(outputs), goal.parent, goal.protect,
                        goal.retain_on_delete, recorded, goal.replace_with, goal.dependencies)

    def diff_and_apply(self, goal: Goal, old: Resource) -> None:
        inputs = ignore(goal.inputs, old.inputs, goal.ignore_changes)
        provider = self.e.provider(goal.type)
        if goal.urn in self.replace:
            diff = Diff(True, ["id"])
        elif any(u in self.replaced for u in goal.replace_with):
            diff = Diff(True, ["replaceWith"])
        else:
            diff = provider.diff(old.id, old.inputs, old.outputs, inputs, goal.ignore_changes)
        if diff.replace_keys or old.pending_replacement:
            self.replace_(goal, old, inputs, diff)
        elif diff.changes:
            outputs = provider.update(old.id, old.outputs, inputs)
            self.e.state[goal.urn] = self.new_state(goal, old.id, inputs, outputs)
            self.steps.append(Step("update", goal.urn, ",".join(diff.changed_keys)))
        else:
            self.e.state[goal.urn] = self.new_state(goal, old.id, inputs, old.outputs)
            self.steps.append(Step("same", goal.urn))

    def replace_(self, goal: Goal, old: Resource, inputs: Mapping[str, Any], diff: Diff) -> None:
        if goal.protect and old.protect:
            raise EngineError(f'unable to replace resource "{goal.urn}" as it is currently marked for protection')
        if goal.import_id:
            raise EngineError("previously-imported resources that still specify an ID may not be replaced; please "
                              f"remove the `import` declaration from your program; {goal.urn}: {diff.replace_keys}")
        self.replaced.add(goal.urn)
        provider = self.e.provider(goal.type)
        if goal.delete_before_replace:
            if not old.pending_replacement:
                self.delete(old)
                old.pending_replacement = True
            id_, outputs = provider.create(goal.urn, goal.inputs)
            self.e.state[goal.urn] = self.new_state(goal, id_, goal.inputs, outputs)
        else:
            id_, outputs = provider.create(goal.urn, goal.inputs)
            self.e.state[goal.urn] = self.new_state(goal, id_, goal.inputs, outputs)
            self.pending_deletes.append(old)
        self.steps.append(Step("replace", goal.urn, ",".join(diff.replace_keys)))

    def delete(self, res: Resource) -> None:
        if res.custom and not res.retain_on_delete:
            self.e.provider(res.type).delete(res.id, res.outputs)
        self.steps.append(Step("delete", res.urn, "retained" if res.retain_on_delete else ""))

    def finish(self, registered: set[str]) -> None:
        for old in self.pending_deletes:
            self.delete(old)
        if self.targets:
            return  # a targeted update deletes nothing it was not asked to
        for urn in [u for u in self.e.state if u not in registered]:
            res = self.e.state[urn]
            if res.protect:
                raise EngineError(f'resource "{urn}" cannot be deleted because it is protected')
            self.delete(res)
            del self.e.state[urn]
