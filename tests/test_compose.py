"""Static checks of the production deployment: docker-compose.yml, the Dockerfiles, .env.example.

No Docker engine is needed: the files are parsed and checked against each other, against the
repository layout and against ``Settings``, so a renamed setting, a moved Dockerfile or a
forgotten variable fails here rather than at deploy time.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sleeve_common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

# Sleeve service -> the `sleeve` arguments its container runs.
SLEEVE_COMMANDS = {
    "scraper": ["worker", "scrape"],
    "trainer": ["worker", "train"],
    "inference": ["serve"],
}
EXPECTED_SERVICES = {"postgres", "s3", "migrate", *SLEEVE_COMMANDS}
# Containers that run Sleeve code, hence read Settings from their environment.
SLEEVE_CONTAINERS = ("migrate", *SLEEVE_COMMANDS)
SHARED_ENV_KEY = "x-sleeve-env"
SHARED_ENV_NAMES = {
    "SLEEVE_DATABASE_URL",
    "SLEEVE_STORE_URL",
    "SLEEVE_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SLEEVE_API_KEY",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN")

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err},
# ${VAR:+alt}, ${VAR+alt} and bare $VAR; "$$" is a literal dollar.
_BRACED = r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
_BARE = r"\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
INTERPOLATION = re.compile(f"{_BRACED}|{_BARE}")
DOTENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Interpolation:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?", ":+", "+"
    arg: str
    where: str

    @property
    def required(self) -> bool:
        return self.op in {":?", "?"}

    @property
    def has_default(self) -> bool:
        return self.op in {":-", "-"}


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        assert self.args.startswith("["), (
            f"line {self.line}: {self.keyword} should use the exec (JSON) form, got {self.args!r}"
        )
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not a JSON list"
        return [str(item) for item in value]


def _walk_strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk_strings(value, f"{where}[{index}]")
    elif isinstance(node, str):
        yield where, node


def _interpolations(compose: dict[str, Any]) -> list[Interpolation]:
    found = []
    for where, text in _walk_strings(compose, "compose"):
        for match in INTERPOLATION.finditer(text.replace("$$", "")):
            name = match["braced"] or match["bare"]
            found.append(Interpolation(name, match["op"], match["arg"] or "", where))
    return found


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Substitute like compose would, given the values of the variables that are set."""

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        if name in values:
            return values[name]
        if match["op"] in {":-", "-"}:
            return str(match["arg"])
        raise AssertionError(f"${{{name}}} has no value and no default")

    parts = text.split("$$")
    return "$".join(INTERPOLATION.sub(replace, part) for part in parts)


def _settings_env_names() -> set[str]:
    """Every environment variable name that Settings reads."""
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(prefix + field_name.upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names.update(str(choice).upper() for choice in getattr(alias, "choices", ()))
    return names


def _parse_dockerfile(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (and parser directives) are dropped, even inside continuations
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, f"{path}: the file ends inside a line continuation"
    return instructions


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "no FROM instruction"
    return instructions[starts[-1] :]


def _env_names(instructions: list[Instruction]) -> dict[str, str]:
    """ENV name -> value, in both the `ENV K=V ...` and the legacy `ENV K V` form."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        tokens = shlex.split(ins.args)
        if tokens and "=" not in tokens[0]:
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            env[name] = value
    return env


def _copy_sources(ins: Instruction) -> list[str]:
    """Source paths of a COPY/ADD from the build context (empty for COPY --from=...)."""
    tokens = shlex.split(ins.args)
    if any(token.startswith("--from") for token in tokens):
        return []
    paths = [token for token in tokens if not token.startswith("--")]
    return paths[:-1]


def _dotenv(path: Path) -> tuple[dict[str, str], set[str]]:
    """(active NAME -> value, names that only appear commented out) of an .env file."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in path.read_text().splitlines():
        match = DOTENV_LINE.match(line.strip())
        if match is None:
            continue
        if match["comment"]:
            commented.add(match["name"])
        else:
            active[match["name"]] = match["value"].strip()
    return active, commented - set(active)


def _named_volume(spec: Any) -> str | None:
    if isinstance(spec, dict):
        return str(spec["source"]) if spec.get("type", "volume") == "volume" else None
    source, sep, _ = str(spec).partition(":")
    if not sep or source.startswith((".", "/", "~", "$")):
        return None  # anonymous volume or bind mount
    return source


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.partition("=")[0]: item.partition("=")[2] or None for item in env}
    return dict(env)


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else str(test)


def _gpu_reservations(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    devices = ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "docker-compose.yml has no `services` mapping"
    )
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- compose


def test_every_expected_service_exists(services: dict[str, Any]) -> None:
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_build_contexts_and_dockerfiles_exist(services: dict[str, Any]) -> None:
    problems = []
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if not context.is_dir():
            problems.append(f"{name}: build.context {context} is not a directory")
        elif not dockerfile.is_file():
            problems.append(f"{name}: dockerfile {dockerfile} does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("service_name", "package"),
    [
        ("scraper", "scraper"),
        ("trainer", "trainer"),
        ("inference", "inference"),
        ("migrate", "inference"),
    ],
)
def test_service_builds_its_own_dockerfile(
    services: dict[str, Any], service_name: str, package: str
) -> None:
    build = services[service_name].get("build")
    assert isinstance(build, dict), f"{service_name}: expected a build mapping, got {build!r}"
    dockerfile = (
        ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    ).resolve()
    expected = (ROOT / "services" / package / "Dockerfile").resolve()
    assert dockerfile == expected, f"{service_name} builds {dockerfile}, expected {expected}"
    assert Path(build.get("context", ".")) == Path("."), (
        f"{service_name}: the build context must be the repository root (for uv.lock, shared/)"
    )


def test_sleeve_containers_run_the_right_command(services: dict[str, Any]) -> None:
    # migrate must say what it runs (its image's CMD serves); the others may rely on their CMD.
    expected = {"migrate": ["db", "upgrade"], **SLEEVE_COMMANDS}
    wrong = {
        name: services[name].get("command")
        for name, argv in expected.items()
        if services[name].get("command", None if name == "migrate" else argv) != argv
    }
    assert not wrong, f"unexpected commands (the images' entrypoint is `sleeve`): {wrong}"


def test_shared_environment_is_one_anchor(compose: dict[str, Any], compose_text: str) -> None:
    shared = compose.get(SHARED_ENV_KEY)
    assert isinstance(shared, dict), (
        f"docker-compose.yml needs a top-level {SHARED_ENV_KEY} mapping"
    )
    missing = SHARED_ENV_NAMES - set(shared)
    assert not missing, f"{SHARED_ENV_KEY} lacks {sorted(missing)}"
    assert re.search(rf"^{SHARED_ENV_KEY}:\s*&\S+", compose_text, re.MULTILINE), (
        f"{SHARED_ENV_KEY} should be a YAML anchor (`{SHARED_ENV_KEY}: &sleeve-env`)"
    )
    for name in SLEEVE_CONTAINERS:
        env = _environment(compose["services"][name])
        differing = sorted(k for k, v in shared.items() if env.get(k, object()) != v)
        assert not differing, f"{name}: environment does not merge {SHARED_ENV_KEY}: {differing}"


def test_shared_environment_targets_the_compose_backends(compose: dict[str, Any]) -> None:
    shared = compose[SHARED_ENV_KEY]
    assert re.match(r"postgresql://.+@postgres:5432/.+", shared["SLEEVE_DATABASE_URL"]), (
        f"SLEEVE_DATABASE_URL should point at the postgres service: {shared['SLEEVE_DATABASE_URL']}"
    )
    assert shared["SLEEVE_STORE_URL"].startswith("s3://"), (
        "SLEEVE_STORE_URL must be s3://bucket/prefix"
    )
    assert re.match(r"https?://s3:\d+", shared["SLEEVE_S3_ENDPOINT"]), (
        f"SLEEVE_S3_ENDPOINT should point at the s3 service: {shared['SLEEVE_S3_ENDPOINT']}"
    )


def test_shared_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every required variable filled in, the environment passes the Settings validators."""
    filled = {i.name: "filled-in-value-0123456789" for i in _interpolations(compose) if i.required}
    for name in _settings_env_names():  # includes the AWS_* aliases
        monkeypatch.delenv(name, raising=False)
    for name in SLEEVE_CONTAINERS:
        for key, value in _environment(compose["services"][name]).items():
            if value is not None:
                monkeypatch.setenv(key, _interpolate(str(value), filled))
        settings = Settings()
        assert settings.database_url.startswith("postgresql+asyncpg://"), name
        assert settings.store_url.startswith("s3://"), name
        assert settings.api_key is not None, f"{name}: SLEEVE_API_KEY did not reach Settings"
        assert settings.aws_secret_access_key is not None, (
            f"{name}: AWS keys did not reach Settings"
        )


def test_every_sleeve_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    named: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for key in _environment(service):
            named.setdefault(key, set()).add(f"docker-compose.yml services.{name}.environment")
    for key in compose.get(SHARED_ENV_KEY, {}):
        named.setdefault(key, set()).add(f"docker-compose.yml {SHARED_ENV_KEY}")
    for interpolation in _interpolations(compose):
        named.setdefault(interpolation.name, set()).add(
            f"docker-compose.yml ${{...}} in {interpolation.where}"
        )
    for package in SLEEVE_COMMANDS:
        dockerfile = ROOT / "services" / package / "Dockerfile"
        for key in _env_names(_parse_dockerfile(dockerfile)):
            named.setdefault(key, set()).add(f"{dockerfile.relative_to(ROOT)} ENV")
    unknown = {
        key: sorted(where)
        for key, where in named.items()
        if key.startswith(("SLEEVE_", "AWS_")) and key.upper() not in known
    }
    assert not unknown, (
        "variables that sleeve_common.settings.Settings does not read "
        f"(SLEEVE_FOO must be a field `foo`, AWS_* a validation alias): {unknown}"
    )


def test_secrets_have_no_default(compose: dict[str, Any]) -> None:
    defaulted = sorted(
        f"${{{i.name}{i.op}{i.arg}}} in {i.where}"
        for i in _interpolations(compose)
        if SECRET_NAME.search(i.name) and not i.required
    )
    assert not defaulted, (
        f"secrets must be required (${{VAR:?message}}), never defaulted: {defaulted}"
    )
    literal = sorted(
        f"{name}.{key}"
        for name, service in compose["services"].items()
        for key, value in _environment(service).items()
        if SECRET_NAME.search(key) and value is not None and "${" not in str(value)
    )
    assert not literal, f"secrets written literally into docker-compose.yml: {literal}"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    undeclared = sorted(
        f"{name}: {volume}"
        for name, service in compose["services"].items()
        for spec in service.get("volumes") or []
        if (volume := _named_volume(spec)) is not None and volume not in declared
    )
    assert not undeclared, f"named volumes missing from the top-level `volumes:`: {undeclared}"


def test_stateful_services_keep_data_in_named_volumes(services: dict[str, Any]) -> None:
    for name in ("postgres", "s3"):
        volumes = [_named_volume(spec) for spec in services[name].get("volumes") or []]
        assert any(volumes), f"{name} must keep its data in a named volume, has {volumes}"


def test_depends_on_targets_exist_and_conditions_hold(services: dict[str, Any]) -> None:
    problems = []
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            if target not in services:
                problems.append(f"{name} depends on unknown service {target!r}")
                continue
            dep = services[target]
            if condition == "service_healthy" and (
                "healthcheck" not in dep or dep["healthcheck"].get("disable")
            ):
                problems.append(
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )
            if condition == "service_completed_successfully" and dep.get("restart", "no") != "no":
                problems.append(
                    f"{name} waits for one-shot {target}, which restarts: {dep['restart']}"
                )
            if condition not in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }:
                problems.append(f"{name} -> {target}: unknown condition {condition!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", SLEEVE_COMMANDS)
def test_sleeve_services_wait_for_migrations_and_backends(
    services: dict[str, Any], name: str
) -> None:
    deps = _depends_on(services[name])
    expected = {
        "postgres": "service_healthy",
        "s3": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    wrong = {k: deps.get(k) for k, v in expected.items() if deps.get(k) != v}
    assert not wrong, f"{name}: depends_on should be {expected}; differs at {wrong}"


def test_migrate_waits_for_postgres(services: dict[str, Any]) -> None:
    assert _depends_on(services["migrate"]).get("postgres") == "service_healthy"


def test_backends_have_healthchecks(services: dict[str, Any]) -> None:
    assert "pg_isready" in _healthcheck_text(services["postgres"]), "postgres: use pg_isready"
    assert _healthcheck_text(services["s3"]), "s3: needs a healthcheck"


@pytest.mark.parametrize("name", ["scraper", "trainer"])
def test_workers_healthcheck_is_sleeve_check(services: dict[str, Any], name: str) -> None:
    assert _healthcheck_text(services[name]).split()[-2:] == ["sleeve", "check"], (
        f"{name}: healthcheck should run `sleeve check`, got {_healthcheck_text(services[name])!r}"
    )


def test_trainer_reserves_an_nvidia_gpu(services: dict[str, Any]) -> None:
    gpus = _gpu_reservations(services["trainer"])
    assert gpus, (
        "trainer needs deploy.resources.reservations.devices "
        "[{driver: nvidia, count: 1, capabilities: [gpu]}]"
    )
    assert gpus[0].get("count") in (1, "all"), f"trainer GPU count: {gpus[0].get('count')!r}"


def test_inference_starts_without_a_gpu(services: dict[str, Any]) -> None:
    assert not _gpu_reservations(services["inference"]), (
        "inference must start on a host without a GPU: enable the GPU in an override file"
    )


def test_inference_publishes_port_8000(services: dict[str, Any]) -> None:
    targets = []
    for spec in services["inference"].get("ports") or []:
        if isinstance(spec, dict):
            targets.append(str(spec.get("target")))
        else:
            targets.append(str(spec).split("/")[0].rsplit(":", 1)[-1])
    assert "8000" in targets, f"inference must map container port 8000, maps {targets}"


def test_inference_healthcheck_hits_healthz(services: dict[str, Any]) -> None:
    text = _healthcheck_text(services["inference"])
    assert re.search(r"[:/]8000/healthz\b", text), (
        f"inference healthcheck should GET :8000/healthz: {text!r}"
    )


# --------------------------------------------------------------------------- .env.example


def test_env_example_names_every_interpolated_variable(compose: dict[str, Any]) -> None:
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE} is missing"
    active, commented = _dotenv(ENV_EXAMPLE)
    interpolated = _interpolations(compose)
    missing = sorted({i.name for i in interpolated} - set(active) - commented)
    assert not missing, f".env.example does not name {missing}"
    required_commented = sorted({i.name for i in interpolated if i.required} & commented)
    assert not required_commented, (
        f"required variables are commented out in .env.example: {required_commented}"
    )


def test_env_example_holds_no_secrets() -> None:
    active, _ = _dotenv(ENV_EXAMPLE)
    filled = sorted(name for name, value in active.items() if SECRET_NAME.search(name) and value)
    assert not filled, f".env.example must leave secrets empty: {filled}"


def test_env_example_has_no_stale_variables(compose: dict[str, Any]) -> None:
    active, commented = _dotenv(ENV_EXAMPLE)
    used = {i.name for i in _interpolations(compose)} | {
        key
        for service in compose["services"].values()
        for key, value in _environment(service).items()
        if value is None  # passed through from .env / the shell
    }
    stale = sorted((set(active) | commented) - used)
    assert not stale, f".env.example names variables docker-compose.yml never reads: {stale}"


# --------------------------------------------------------------------------- Dockerfiles


@pytest.fixture(scope="module", params=sorted(SLEEVE_COMMANDS))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Path, list[Instruction]]:
    package = str(request.param)
    path = ROOT / "services" / package / "Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return package, path, _parse_dockerfile(path)


def test_dockerfile_is_multi_stage(dockerfile: tuple[str, Path, list[Instruction]]) -> None:
    _, path, instructions = dockerfile
    froms = [ins for ins in instructions if ins.keyword == "FROM"]
    assert len(froms) > 1, f"{path}: expected a multi-stage build, found {len(froms)} FROM"


def test_dockerfile_final_stage_runs_as_non_root(
    dockerfile: tuple[str, Path, list[Instruction]],
) -> None:
    _, path, instructions = dockerfile
    users = [ins.args for ins in _final_stage(instructions) if ins.keyword == "USER"]
    assert users, f"{path}: the final stage has no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{path}: the final stage runs as {users[-1]!r}"


def test_dockerfile_pins_uv(dockerfile: tuple[str, Path, list[Instruction]]) -> None:
    _, path, instructions = dockerfile
    refs = re.findall(r"ghcr\.io/astral-sh/uv:(\S+)", " ".join(i.args for i in instructions))
    assert refs, f"{path}: expected the official uv image ghcr.io/astral-sh/uv:<version>"
    unpinned = [ref for ref in refs if not re.fullmatch(r"\d+\.\d+\.\d+", ref.split()[0])]
    assert not unpinned, f"{path}: pin the uv image to an exact version, got {unpinned}"


def test_dockerfile_syncs_only_its_package(dockerfile: tuple[str, Path, list[Instruction]]) -> None:
    package, path, instructions = dockerfile
    syncs = [ins for ins in instructions if ins.keyword == "RUN" and "uv sync" in ins.args]
    assert syncs, f"{path}: no `uv sync`"
    for ins in syncs:
        for flag in (f"--package sleeve-{package}", "--frozen", "--no-dev"):
            assert flag in ins.args, f"{path}:{ins.line}: `uv sync` lacks `{flag}`: {ins.args!r}"


def test_dockerfile_copies_workspace_manifests_but_only_its_sources(
    dockerfile: tuple[str, Path, list[Instruction]],
) -> None:
    package, path, instructions = dockerfile
    copied = [
        (ins.line, Path(src).as_posix().rstrip("/"))
        for ins in instructions
        if ins.keyword in {"COPY", "ADD"}
        for src in _copy_sources(ins)
    ]
    sources = {src for _, src in copied}
    members = [
        p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("services/*/pyproject.toml")
    ]
    manifests = {"pyproject.toml", "uv.lock", "shared/pyproject.toml"} | {
        f"{member}/pyproject.toml" for member in members
    }
    missing = sorted(manifests - sources)
    assert not missing, f"{path}: uv needs every workspace manifest; not copied: {missing}"
    foreign = sorted(
        f"line {line}: {src}"
        for line, src in copied
        for member in members
        if member != f"services/{package}"
        and (src == member or src.startswith(f"{member}/"))
        and src != f"{member}/pyproject.toml"
    )
    assert not foreign, f"{path}: copies another service's files: {foreign}"
    absent = sorted(f"line {line}: {src}" for line, src in copied if not (ROOT / src).exists())
    assert not absent, f"{path}: copies paths that do not exist in the repository: {absent}"


def test_dockerfile_runs_the_right_command(dockerfile: tuple[str, Path, list[Instruction]]) -> None:
    package, path, instructions = dockerfile
    final = _final_stage(instructions)
    entrypoint = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    cmd = [ins for ins in final if ins.keyword == "CMD"]
    argv = (entrypoint[-1].exec_form() if entrypoint else []) + (cmd[-1].exec_form() if cmd else [])
    expected = ["sleeve", *SLEEVE_COMMANDS[package]]
    assert argv == expected, f"{path}: runs {argv}, expected {expected}"


def test_dockerfile_has_healthcheck_and_env(
    dockerfile: tuple[str, Path, list[Instruction]],
) -> None:
    _, path, instructions = dockerfile
    final = _final_stage(instructions)
    checks = [ins for ins in final if ins.keyword == "HEALTHCHECK"]
    assert checks and checks[-1].args.upper() != "NONE", (
        f"{path}: the final stage needs a HEALTHCHECK"
    )
    env = _env_names(final)
    for name in ("PYTHONUNBUFFERED", "SLEEVE_DATA_DIR"):
        assert env.get(name), f"{path}: the final stage should set ENV {name}"


def test_inference_image_has_no_trainer() -> None:
    path = ROOT / "services" / "inference" / "Dockerfile"
    text = path.read_text().lower()
    for needle in ("tensorflow", "sleeve-trainer", "sleeve_trainer", "services/trainer/src"):
        assert needle not in text, (
            f"{path} mentions {needle!r}: the inference image must not pull it"
        )


# --------------------------------------------------------------------------- .dockerignore


@pytest.mark.parametrize(
    "pattern", ["var", ".venv", ".git", "tests", ".env", "__pycache__", "*.onnx", "*.h5"]
)
def test_dockerignore_excludes(pattern: str) -> None:
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} is missing"
    lines = {
        line.strip().removeprefix("**/").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
    }
    assert pattern in lines, f".dockerignore should exclude {pattern!r}"
