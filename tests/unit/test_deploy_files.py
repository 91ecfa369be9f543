"""What an operator copies from the repository runs as documented (issue 20, items 7 and 8).

- Every gunicorn command in the docs, the Dockerfile and docker-compose.yml loads
  gunicorn.conf.py (read deadlines, an access log without query strings).
- No provider example passes a secret on the command line, which the CLI itself warns against.
- docker-compose.yml requires the public base URL (no example default that fails every signed
  webhook), trusts the one proxy it puts in front, makes the checkpoint key where the image's
  user can read it, and names only commands that exist.
- The image installs the runtime lock only; the development lock is the runtime lock plus the
  test tools, pin for pin and hash for hash.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from citizen_lookup.cli import main
from citizen_lookup.providers import PROVIDERS
from citizen_lookup.services.connections import secret_credentials

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEST_TOOLS = (
    "pytest", "pytest-randomly", "hypothesis", "schemathesis", "mypy", "ruff", "mutmut",
    "fakeredis", "coverage",
)  # fmt: skip


def _joined(text: str) -> str:
    """Shell and Dockerfile continuations joined into one line."""
    return re.sub(r"\\\n\s*", " ", text)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)


# -- gunicorn -----------------------------------------------------------------------------------
def _gunicorn_commands() -> list[tuple[str, str]]:
    """Every line (continuations joined) in the docs and deploy files that starts the app."""
    found = []
    for path in [*DOCS, ROOT / "Dockerfile", ROOT / "docker-compose.yml"]:
        for line in _joined(path.read_text()).splitlines():
            if re.search(r"\bgunicorn\b", line) and "app:app" in line:
                found.append((path.name, line.strip()))
    return found


def test_every_documented_gunicorn_command_loads_gunicorn_conf() -> None:
    commands = _gunicorn_commands()
    files = {name for name, _ in commands}
    assert {"README.md", "scaling.md", "Dockerfile", "docker-compose.yml"} <= files, files
    for name, line in commands:
        assert re.search(r'(-c|--config)"?,? *"?gunicorn\.conf\.py', line), (name, line)


def test_gunicorn_conf_states_the_pool_the_settings_give() -> None:
    defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    conf = (ROOT / "gunicorn.conf.py").read_text()
    assert "overflow" not in conf.lower().replace("no overflow", "")
    assert f"pool of {defaults['db_pool_size']} " in conf


def test_scaling_and_compose_give_every_required_setting() -> None:
    """docs/scaling.md's settings for each host, and docker-compose.yml's environments, name
    every setting a process refuses to start without; the checkpoint key only where it seals."""
    from citizen_lookup.settings import REQUIRED_SETTINGS

    scaling = (ROOT / "docs" / "scaling.md").read_text()
    step = scaling[scaling.index("### Step 2") : scaling.index("The nginx of `scripts/cluster`")]
    compose = _compose()
    for name in REQUIRED_SETTINGS:
        variable = f"CITIZEN_LOOKUP_{name.upper()}"
        assert variable in step, variable
        assert variable in compose["x-sealing-env"], variable
        assert (variable in compose["x-app"]["environment"]) == (name != "checkpoint_key_file")


# -- secrets in examples ------------------------------------------------------------------------
def _connection_adds() -> list[tuple[str, str]]:
    commands = []
    for path in [*DOCS, ROOT / "docker-compose.yml"]:
        text = path.read_text()
        blocks = _code_blocks(text) if path.suffix == ".md" else [text]
        for block in blocks:
            for line in _joined(block).splitlines():
                if "connections add" in line:
                    commands.append((path.name, line))
    return commands


def test_every_provider_has_a_documented_connections_add() -> None:
    kinds = {
        match for _, line in _connection_adds() for match in re.findall(r"--kind\s+([a-z]+)", line)
    }
    assert kinds >= set(PROVIDERS), set(PROVIDERS) - kinds


def test_no_documented_example_puts_a_secret_on_the_command_line() -> None:
    checked = 0
    for name, line in _connection_adds():
        kind = re.search(r"--kind\s+([a-z]+)", line)
        if kind is None:  # a fragment (`connections add …`): only stdin may carry a secret
            secrets_of_kind = {key for k in PROVIDERS for key in secret_credentials(k)}
        else:
            secrets_of_kind = set(secret_credentials(kind.group(1)))
        for key, value in re.findall(r"--credential\s+([a-z_]+)=(\S+)", line):
            assert key not in secrets_of_kind or value == "-", (name, key, value, line)
        checked += sum(
            key in secrets_of_kind
            for key in re.findall(r"--credential(?:-file)?\s+([a-z_]+)=", line)
        )
    assert checked >= 10  # secrets are given in the examples, by file or stdin, and were seen


def test_the_examples_name_secret_files_for_each_secret_they_need() -> None:
    """Each kind's example gives every secret credential it requires, by file or stdin."""
    from citizen_lookup.providers import provider_class

    for name, line in _connection_adds():
        kind = re.search(r"--kind\s+([a-z]+)", line)
        if kind is None or "--credential" not in line:
            continue  # the demo's example lets the CLI ask for the secret
        given = set(re.findall(r"--credential(?:-file)?\s+([a-z_]+)=", line))
        required = set(provider_class(kind.group(1)).required_credentials)
        assert required <= given, (name, required - given, line)


# -- docker-compose.yml -------------------------------------------------------------------------
def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_requires_the_public_base_url_and_trusts_its_proxy() -> None:
    environment = _compose()["x-app"]["environment"]
    base = environment["CITIZEN_LOOKUP_PUBLIC_BASE_URL"]
    assert re.fullmatch(r"\$\{CITIZEN_LOOKUP_PUBLIC_BASE_URL:\?[^}]+\}", base), base
    proxies = str(environment["CITIZEN_LOOKUP_TRUSTED_PROXIES"])
    assert re.fullmatch(r"(1|\$\{CITIZEN_LOOKUP_TRUSTED_PROXIES:-1\})", proxies), proxies
    assert "nginx" in _compose()["services"]  # the one proxy it trusts
    for required in ("AUDIT_KEY", "CREDENTIALS_KEY"):
        assert ":?" in environment[f"CITIZEN_LOOKUP_{required}"], required


def test_compose_makes_the_checkpoint_key_as_the_images_user_in_a_volume() -> None:
    compose = _compose()
    services = compose["services"]
    mounts = {
        name: [v for v in service.get("volumes") or [] if v.startswith("checkpoint-key:")]
        for name, service in services.items()
    }
    assert {name for name, found in mounts.items() if found} == {"keygen", "migrate", "worker"}
    assert all(m[0].endswith(":ro") for name, m in mounts.items() if name in ("migrate", "worker"))
    assert "checkpoint-key" in compose["volumes"]
    keygen = services["keygen"]
    assert "user" not in keygen  # the image's own user, uid 10001
    script = " ".join(keygen["command"])
    assert "citizen-lookup audit keygen -o" in script and '[ -s "$$key" ]' in script
    assert services["migrate"]["depends_on"]["keygen"] == {
        "condition": "service_completed_successfully"
    }
    key_file = compose["x-sealing-env"]["CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE"]
    folder = mounts["worker"][0].split(":")[1]
    assert key_file.startswith(folder + "/")
    assert f"key={key_file}" in script
    # No file secret for the key: Compose ignores a file secret's uid and mode outside swarm,
    # so a host file of mode 600 is unreadable by uid 10001.
    assert "checkpoint-key" not in (compose.get("secrets") or {})
    dockerfile = _joined((ROOT / "Dockerfile").read_text())
    assert re.search(rf"chown citizen [^&]*{re.escape(folder)}", dockerfile)
    assert f"chmod 700 {folder}" in dockerfile
    assert "USER 10001" in dockerfile


def _cli_paths(text: str) -> set[tuple[str, ...]]:
    """Every `citizen-lookup <words>` named in ``text``, as the command words."""
    found = set()
    for match in re.finditer(r"citizen-lookup((?:[ \"',]+[a-z][a-z-]*)+)", text):
        words = [w for w in re.split(r"[ \"',]+", match.group(1)) if w]
        found.add(tuple(words))
    return found


def test_every_command_compose_runs_exists() -> None:
    """The commands in its instructions (comments) and its services' commands (not the
    Sentinels' configuration, where citizen-lookup is the name of the monitored primary)."""
    raw = (ROOT / "docker-compose.yml").read_text()
    comments = "\n".join(line for line in raw.splitlines() if line.lstrip().startswith("#"))
    commands = [
        " ".join(service["command"]) if isinstance(service["command"], list) else service["command"]
        for name, service in _compose()["services"].items()
        if "command" in service and not name.startswith("sentinel")
    ]
    paths = _cli_paths("\n".join([comments, *commands]))
    assert ("db", "upgrade") in {p[:2] for p in paths} and ("worker",) in {p[:1] for p in paths}
    context = click.Context(main)
    for words in paths:
        command: click.Command | None = main
        for word in words:
            if not isinstance(command, click.Group):
                break  # the rest are arguments
            command = command.get_command(context, word)
            assert command is not None, words
    services = _compose()["services"]
    assert services["web"]["command"][:3] == ["gunicorn", "--config", "gunicorn.conf.py"]
    assert services["web"]["command"][-1] == "app:app"
    assert (ROOT / "app.py").is_file() and (ROOT / "gunicorn.conf.py").is_file()


# -- the two locks ------------------------------------------------------------------------------
def _pins(name: str) -> dict[str, str]:
    """Each pinned package of a lock: its name and its whole pin block (version and hashes)."""
    text = (ROOT / name).read_text()
    blocks = {}
    for match in re.finditer(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?: +--hash=\S+(?: \\)?\n)+)", text, re.M
    ):
        blocks[match.group(1).lower()] = match.group(0)
    return blocks


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_of_each_lock_has_hashes(lock: str) -> None:
    text = (ROOT / lock).read_text()
    pins = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(pins) == len(_pins(lock)) > 20


def test_the_runtime_lock_holds_no_test_tools() -> None:
    runtime, development = _pins("requirements.lock"), _pins("requirements-dev.lock")
    for tool in TEST_TOOLS:
        assert tool not in runtime, tool
        assert tool in development, tool


def test_the_development_lock_is_the_runtime_lock_plus_the_test_tools() -> None:
    runtime, development = _pins("requirements.lock"), _pins("requirements-dev.lock")
    for name, block in runtime.items():
        assert development.get(name) == block, name  # same version, same hashes
    assert len(development) > len(runtime)


def test_the_runtime_lock_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["charts"],
              *project["optional-dependencies"]["bootstrap"]]  # fmt: skip
    runtime = _pins("requirements.lock")
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()  # type: ignore[union-attr]
        assert name in runtime, requirement


def test_the_image_installs_only_the_runtime_lock_and_bootstrap_the_development_one() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r requirements-dev.lock" not in dockerfile
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    assert "requirements.lock" in copied and "requirements-dev.lock" not in copied
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "lock_digest.py --check requirements.lock" in dockerfile
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    assert "--require-hashes -r requirements-dev.lock" in bootstrap
    lock_script = (ROOT / "scripts" / "lock").read_text()
    assert "--constraint requirements.lock" in lock_script  # dev pins never move runtime ones
