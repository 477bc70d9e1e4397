"""The plan's types: frozen pydantic models that go to JSON and back unchanged.

Nothing here reads AWS or imports a flow: the flows import these types to execute a plan, the
builders (:mod:`flows.plan.build`) make them, the renderers (:mod:`flows.plan.render`) show them.
No credentials are ever part of a plan (it is printed, logged and passed as a flow parameter):
the target is named by its region, endpoint and role; an executor resolves it again.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

Kind = Literal["lambda", "apprunner", "ecs"]
OnFailure = Literal["rollback-all", "keep"]

# Every step a deploy, a rollback or a release runs, in the words of the executor that will run it.
Action = Literal[
    "build",  # build the artifact (Lambda zip, container image) from the component's source
    "reuse",  # use the artifact already stored for this version (same source), or the release's build
    "copy",  # another region's deploy: copy the release's Lambda package into its bucket (CopyObject, sha256 checked)
    "upload",  # keep the Lambda package in S3 with its metadata (after checking the retention rule)
    "push",  # push the image to ECR as :{version}, move :latest; keep its metadata in S3
    "lock",  # take the environment's lock for the component
    "read-live",  # read what runs now again, under the lock: the rollback target
    "repair-split",  # a live alias left split by a shift that died goes back to its primary version
    "update-code",  # UpdateFunctionCode from S3, wait, verify CodeSha256
    "publish",  # PublishVersion (CodeSha256 checked)
    "migrations",  # run the package's migration command against the environment's database
    "smoke",  # pre-traffic (Lambda: invoke the new version) or post-deploy (App Runner: HTTP) smoke checks
    "sample-event",  # invoke with the component's sample event; the answer must contain sample_expect
    "rules",  # make EventBridge match the component's rules, targeting its live alias
    "record-shifting",  # the ledger's "shifting" record: the rollback target, kept if the run dies
    "shift",  # move live to the new version, at once or by a strategy's increments (bake with guards)
    "health",  # the health URL: N consecutive 2xx answers (naming the version when it says one)
    "alarms",  # no guarding CloudWatch alarm fires
    "register-revision",  # ECS: a new task definition revision, only the component's container changed (digest)
    "update-service",  # App Runner UpdateService to the image; ECS UpdateService to the revision
    "follow-operation",  # follow App Runner's operation (or ECS's service deployment) to its end
    "verify-image",  # the service reports the image it was pointed at
    "verify-revision",  # the ECS service runs the revision it was updated to
    "on-failure",  # what a failure after traffic moved does: roll back, verify
    "record",  # the outcome in the ledger, the run's artifact and Slack
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Step(_Frozen):
    """One step: what it does (``action``), in words (``text``), and the inputs it runs with."""

    action: Action
    text: str
    inputs: dict[str, JsonValue] = Field(default_factory=dict)


class Check(_Frozen):
    """A check the builder made against AWS or the config before anything changes, and its answer."""

    name: str
    result: str


class TargetRef(_Frozen):
    """Where the calls go, without credentials: an executor resolves it again (``opcd.aws.target_for``)."""

    description: str  # AwsTarget.describe(): the line the CLI prints
    kind: str  # sandbox | endpoint | aws
    region: str
    endpoint_url: str | None = None
    role_arn: str | None = None
    account: str | None = None  # as STS answered when the plan was built


class Live(_Frozen):
    """What runs (or ran) on a component's resource: an app version and the Lambda version or image."""

    version: str | None  # the app version; None: not deployed by opcd
    lambda_version: str | None = None
    code_sha256: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)  # a split live alias
    image: str | None = None
    digest: str | None = None
    status: str | None = None  # App Runner's service status; ECS: tasks running/desired
    task_definition: str | None = None  # ECS: the task definition revision's ARN

    def describe(self) -> str:
        name = self.version or ("an image opcd did not push" if self.image else "a version opcd did not deploy")
        if self.task_definition:
            revision = self.task_definition.rpartition("/")[2]
            return f"{name} ({revision}, {self.digest or self.image})"
        if self.image:
            return f"{name} ({self.image}{', ' + self.digest if self.digest else ''})"
        return f"{name} (Lambda version {self.lambda_version})"


class ArtifactPlan(_Frozen):
    """The version's artifact: where it is (or will be) kept, and whether this run must build it."""

    location: str  # s3://bucket/component/version/lambda.zip, or repository-uri:version
    build: bool
    reason: str
    source_hash: str | None = None
    sha256: str | None = None  # the zip's (Lambda), known when already built
    code_sha256: str | None = None  # Lambda's CodeSha256 of the zip, known when already built
    size: int | None = None  # the zip's bytes (Lambda), known when already built
    digest: str | None = None  # the image's, known when already in ECR
    copy_from: str | None = None  # Lambda, another region: the build's s3:// location, copied here (CopyObject)


class Increment(_Frozen):
    """One position of a gradual shift: ``percent`` of traffic on the new version for ``bake_seconds``."""

    percent: int
    bake_seconds: float


class ShiftPlan(_Frozen):
    """How ``live`` moves: the strategy, its increments before 100%, and the guards polled meanwhile."""

    strategy: str  # all-at-once | canaryP-D | linearP-D
    description: str
    increments: tuple[Increment, ...] = ()
    poll_interval: float | None = None
    guards: tuple[str, ...] = ()


class DeployPlan(_Frozen):
    """One component's deploy to one environment, resolved and checked before anything changes."""

    plan: Literal["deploy"] = "deploy"
    kind: Kind
    component: str
    environment: str
    region: str | None = None  # one of the environment's regions when it has several (else None)
    version: str
    resource: str  # the Lambda function, or the App Runner / ECS service's name
    resource_id: str  # the function's name, or the service's ARN
    target: TargetRef
    live: Live  # what runs now (as read when the plan was built)
    rollback_to: Live  # where a failure after traffic moved goes back to
    artifact: ArtifactPlan
    shift: ShiftPlan | None = None
    alarms: tuple[str, ...] = ()
    accepted_alarms: tuple[str, ...] = ()  # firing now, accepted by name (or by a rollback/release preflight)
    noop: bool = False  # that version already runs there: the run only records it (and syncs rules)
    steps: tuple[Step, ...]
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()  # warnings the run repeats (a split alias, a run that died while shifting)

    def actions(self) -> list[str]:
        return [step.action for step in self.steps]


class RollbackPlan(_Frozen):
    """One component in one environment back to an earlier version (``--to``, or the ledger's previous)."""

    plan: Literal["rollback"] = "rollback"
    kind: Kind
    component: str
    environment: str
    region: str | None = None  # one of the environment's regions when it has several (else None)
    resource: str
    resource_id: str
    target: TargetRef
    live: Live
    to: Live
    force: bool = False  # a target the ledger never saw live
    noop: bool = False
    steps: tuple[Step, ...]
    checks: tuple[Check, ...] = ()

    def actions(self) -> list[str]:
        return [step.action for step in self.steps]


class ApprovalGate(_Frozen):
    """An environment's approval: who may answer, how long the release waits, how identity is checked."""

    approvers: tuple[str, ...]
    timeout: float
    verify: str


class ComponentBuild(_Frozen):
    """A component's artifact as the release makes it once, before the first environment."""

    component: str
    artifact: ArtifactPlan
    steps: tuple[Step, ...]


class Stage(_Frozen):
    """One environment of a release: its approval (if any), then every component's deploy in parallel."""

    environment: str
    approval: ApprovalGate | None = None
    regions: tuple[str, ...] = ()  # several regions: in this order, the first alone, then the rest (its deploys)
    deploys: tuple[DeployPlan, ...]
    load_tests: tuple[str, ...] = ()  # components load-tested after these deploys (the first environment only)


class ReleasePlan(_Frozen):
    """One version through the environments in order; ``on_failure``: what a failed sibling does to the rest."""

    plan: Literal["release"] = "release"
    version: str
    git_sha: str | None = None
    components: tuple[str, ...]
    why: str  # why these components
    builds: tuple[ComponentBuild, ...] = ()
    stages: tuple[Stage, ...] = ()
    on_failure: OnFailure = "rollback-all"

    def deploy(self, component: str, environment: str, region: str | None = None) -> DeployPlan:
        """The deploy plan a child run of ``component`` in ``environment`` (its ``region``: None, the first)
        receives."""
        for stage in self.stages:
            for plan in stage.deploys:
                if (plan.component, plan.environment) == (component, environment) and region in (None, plan.region):
                    return plan
        raise KeyError(f"{component} in {environment} is not part of release {self.version}")


AnyPlan = Annotated[DeployPlan | RollbackPlan | ReleasePlan, Field(discriminator="plan")]
_ANY_PLAN: TypeAdapter[DeployPlan | RollbackPlan | ReleasePlan] = TypeAdapter(AnyPlan)


def parse_plan(text: str | bytes) -> DeployPlan | RollbackPlan | ReleasePlan:
    """A plan from its JSON (``model_dump_json``; ``opcd … --dry-run --json``), whichever kind it is."""
    return _ANY_PLAN.validate_json(text)
