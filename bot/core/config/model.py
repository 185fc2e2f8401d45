"""The public types of a `.github/flops.yml`: frozen dataclasses, and the error naming every problem."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from bot.core.config.paths import path_matches

CONFIG_PATH = ".github/flops.yml"
# The kinds of work `queue:` maps to a Kueue LocalQueue (`tests` is for the test Jobs to come).
QUEUE_KINDS = ("build", "regression", "federated", "tests")
AUTO_MIN = 5  # baselines `tolerance: auto` needs before it decides anything


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # `images[1].dockerfile`; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"`{self.path}`: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Every problem of a flops.yml; `str()` is one line per problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)

    def markdown(self) -> str:
        """One list item per problem, its key path in a code span (for check runs and replies)."""
        return "\n".join(f"- `{p.path or '(file)'}`: {p.message}" for p in self.problems)


@dataclass(frozen=True, slots=True)
class Tolerance:
    value: float
    relative: bool = False  # True: `value` is a percentage of the baseline
    auto: bool = False  # `tolerance: auto`: k standard deviations of the recent baselines (`value` unused)


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    direction: str  # "higher" | "lower": which way is better
    tolerance: Tolerance = Tolerance(0.0)
    auto_k: float = 3.0  # `tolerance: auto`: how many standard deviations
    auto_window: int = 20  # `tolerance: auto`: over how many of the newest default-branch baselines


@dataclass(frozen=True, slots=True)
class BisectConfig:
    """`regression.bisect`: how the culprit of a drop on the default branch is searched for."""

    auto: bool = False  # start one when a baseline is worse than the previous one
    parallel: int = 4  # regression runs per round
    max_commits: int = 256  # the longest range searched


@dataclass(frozen=True, slots=True)
class Volume:
    claim: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ImageConfig:
    name: str
    dockerfile: str
    context: str = "."
    paths: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    resources: Resources = Resources("1", "2Gi", 0)
    timeout: int = 30 * 60
    inputs: tuple[str, ...] = ()  # globs of the files the image is made of: set, it is content-addressed

    def matches(self, changed_paths: Iterable[str] | None) -> bool:
        """Whether a change to `changed_paths` needs this image rebuilt (always, without `paths`)."""
        if not self.paths or changed_paths is None:
            return True
        return any(path_matches(pattern, path) for path in changed_paths for pattern in self.paths)

    def reference(self, registry: str, tag: str) -> str:
        return f"{registry}/{self.name}:{tag}"


@dataclass(frozen=True, slots=True)
class DeployTarget:
    name: str
    repo: str
    branch: str
    file: str
    images: tuple[str, ...]
    field: str | None = None
    mode: str = "commit"  # "commit" | "pull_request"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "repo": self.repo, "branch": self.branch, "file": self.file,
                "images": list(self.images), "field": self.field, "mode": self.mode}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeployTarget:
        return cls(name=str(data["name"]), repo=str(data["repo"]), branch=str(data["branch"]), file=str(data["file"]),
                   images=tuple(str(i) for i in data["images"]), field=data.get("field"),
                   mode=str(data.get("mode", "commit")))


@dataclass(frozen=True, slots=True)
class RegressionConfig:
    image: str
    command: tuple[str, ...]
    resources: Resources = Resources()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    volumes: tuple[Volume, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 3600
    metrics: tuple[Metric, ...] = ()
    ray: RayConfig | None = None  # with it the run is a KubeRay RayJob, without it a batch Job
    mlflow: MlflowConfig | None = None
    bisect: BisectConfig = BisectConfig()


@dataclass(frozen=True, slots=True)
class RayGroup:
    """The head (`name` "head", `replicas` 1) or one worker group of `regression.ray`."""

    name: str
    replicas: int = 1
    resources: Resources = Resources()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RayConfig:
    version: str  # spec.rayClusterSpec.rayVersion
    head: RayGroup
    workers: tuple[RayGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class MlflowConfig:
    tracking_uri: str  # http(s), no credentials in it
    experiment: str = "{repo}"  # `{repo}`: the repository's full name

    def experiment_for(self, repo: str) -> str:
        return self.experiment.replace("{repo}", repo)


TEST_EVENTS = ("pull_request", "push")


@dataclass(frozen=True, slots=True)
class TestConfig:
    """One entry of `tests:`: a command run in `image` on every PR head / push, JUnit on its check."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    image: str  # a full reference, or (with `build`) the name of an `images` entry
    command: tuple[str, ...]
    build: bool = False  # True: `image` names an `images` entry built for the commit first
    paths: tuple[str, ...] = ()
    resources: Resources = Resources()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    volumes: tuple[Volume, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 30 * 60
    on: tuple[str, ...] = TEST_EVENTS

    def matches(self, changed_paths: Iterable[str] | None) -> bool:
        """Whether a change to `changed_paths` runs this test (always without `paths`, or unknown changes)."""
        if not self.paths or changed_paths is None:
            return True
        return any(path_matches(pattern, path) for path in changed_paths for pattern in self.paths)


@dataclass(frozen=True, slots=True)
class FederatedConfig:
    server_image: str
    server_port: int = 8080
    client_image: str = ""
    clients: int = 2
    rounds: int = 3
    timeout: int = 3600
    max_clients: int = 16
    max_rounds: int = 100
    on_push: bool = False
    resources: Resources = Resources()
    admission_timeout: int = 30 * 60  # under a Kueue queue: the whole run admitted by then, or cancelled


@dataclass(frozen=True, slots=True)
class RepoConfig:
    version: int
    registry: str
    branches: tuple[str, ...] | None = None  # None: the repository's default branch
    tags: tuple[str, ...] = ()
    images: tuple[ImageConfig, ...] = ()
    deploy: tuple[DeployTarget, ...] = ()
    regression: RegressionConfig | None = None
    federated: FederatedConfig | None = None
    pr_registry: str | None = None  # where pull-request builds push; None: they build without pushing
    queue: Mapping[str, str] = field(default_factory=dict)  # QUEUE_KINDS -> Kueue LocalQueue (trusted)
    tests: tuple[TestConfig, ...] = ()

    def queue_for(self, kind: str, default: str | None = None) -> str | None:
        """The Kueue LocalQueue the Jobs of `kind` (one of QUEUE_KINDS) go to: this config's `queue`,
        else `default` (FLOPS_DEFAULT_QUEUE); None: not queued (no Kueue involved)."""
        return self.queue.get(kind) or default or None

    def test(self, name: str) -> TestConfig | None:
        return next((test for test in self.tests if test.name == name), None)

    def image(self, name: str) -> ImageConfig | None:
        return next((image for image in self.images if image.name == name), None)

    def shaped_by(self, commit: RepoConfig | None) -> RepoConfig:
        """This trusted config (the default branch's), with the build-shaping keys of `commit`'s
        file: each image keeps its name, resources and timeout and takes the commit's
        `dockerfile`, `context`, `paths`, `inputs`, `build_args` and `target`. Everything that decides what
        builds and where it goes (`registry`, `pr_registry`, `branches`, `tags`, `deploy`, which
        images exist) stays this config's: images only the commit names are not built."""
        if commit is None:
            return self
        return replace(self, images=tuple(_shaped(image, commit.image(image.name)) for image in self.images))


BUILD_SHAPE_KEYS = ("dockerfile", "context", "paths", "inputs", "build_args", "target")


def _shaped(image: ImageConfig, pushed: ImageConfig | None) -> ImageConfig:
    if pushed is None:
        return image
    return replace(image, **{key: getattr(pushed, key) for key in BUILD_SHAPE_KEYS})
