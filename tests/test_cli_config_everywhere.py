"""Issue #19.1: one configuration for every command.

Every CLI test runs the installed ``calbridge`` script in a subprocess, in a working
directory of its own (so a stray ``./calbridge.db`` would be seen), against a real store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calbridge import BridgeConfig
from calbridge.jobs import JobQueue
from calbridge.models import TokenSet
from calbridge.store import KeyRing, Store, Vault, create_engine, generate_key
from calbridge.store.testing import db_url, fresh_postgres_url

__all__ = ["db_url", "fresh_postgres_url"]  # the fixtures

CALBRIDGE = str(Path(sys.executable).with_name("calbridge"))
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALBRIDGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CALBRIDGE, *args],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config(path: Path, db_url: str, **extra: str) -> Path:
    lines = [f"database_url = {json.dumps(db_url)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    path.write_text("[calbridge]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _seed_secrets(db_url: str, spec: str, count: int = 3) -> None:
    engine = create_engine(db_url, upgrade=True)
    try:
        store = Store(engine, Vault(KeyRing.parse(spec)))
        for i in range(count):
            acc = store.accounts.upsert_account(
                app_user_id=f"u{i}", provider="p", provider_account_id=str(i)
            )
            assert acc.id is not None
            store.credentials.save_tokens(
                acc.id, TokenSet(access_token=f"a{i}", refresh_token=f"r{i}")
            )
    finally:
        engine.dispose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for the command (where ./calbridge.db would appear)."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


# -- keys rotate / check read the deployment's configuration ------------------------------


def test_keys_check_and_rotate_honour_calbridge_config(
    db_url: str, tmp_path: Path, workdir: Path
) -> None:
    old, new = f"old:{generate_key()}", f"new:{generate_key()}"
    _seed_secrets(db_url, old)
    config = _config(tmp_path / "calbridge.toml", db_url)
    env = _env(CALBRIDGE_CONFIG=str(config), CALBRIDGE_KEYS=f"{new},{old}")

    checked = _cli(["keys", "check", "--json"], workdir, env)
    assert checked.returncode == 1, checked.stderr
    assert json.loads(checked.stdout) == {"remaining": 3, "current_key_id": "new"}

    rotated = _cli(["keys", "rotate", "--json"], workdir, env)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"rotated": 3, "remaining": 0, "current_key_id": "new"}
    assert not (workdir / "calbridge.db").exists()


def test_keys_use_config_option_and_keys_from_the_file(
    db_url: str, tmp_path: Path, workdir: Path
) -> None:
    old = f"old:{generate_key()}"
    _seed_secrets(db_url, old, count=2)
    new = f"new:{generate_key()}"
    config = _config(tmp_path / "calbridge.toml", db_url, keys=f"{new},{old}")

    result = _cli(["keys", "rotate", "--config", str(config), "--json"], workdir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rotated"] == 2
    assert not (workdir / "calbridge.db").exists()


def test_keys_rotate_without_keys_is_an_error(tmp_path: Path, workdir: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/existing.db"
    _seed_secrets(db_url, f"old:{generate_key()}", count=1)
    config = _config(tmp_path / "calbridge.toml", db_url)

    result = _cli(["keys", "rotate", "--config", str(config)], workdir)
    assert result.returncode == 1
    assert "CALBRIDGE_KEYS" in result.stderr
    assert "remaining" not in result.stdout
    assert "Traceback" not in result.stderr


# -- read-only commands never create a database -------------------------------------------

READ_ONLY = [
    ["keys", "check"],
    ["keys", "rotate"],
    ["jobs"],
    ["db", "status"],
    ["accounts"],
    ["channels"],
    ["route", "someone"],
    ["migrate", "plan", "--user", "someone"],
    ["migrate", "status", "--user", "someone"],
    ["migrate", "diff", "--user", "someone"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_refuse_a_missing_sqlite_file(
    args: list[str], tmp_path: Path, workdir: Path
) -> None:
    missing = tmp_path / "typo.db"
    env = _env(CALBRIDGE_KEYS=f"k1:{generate_key()}")
    result = _cli([*args, "--database-url", f"sqlite:///{missing}"], workdir, env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "no calbridge database at" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()
    assert not (workdir / "calbridge.db").exists()


def test_read_only_commands_refuse_the_default_file_too(workdir: Path) -> None:
    result = _cli(["jobs"], workdir)
    assert result.returncode == 1
    assert "no calbridge database at" in result.stderr
    assert not (workdir / "calbridge.db").exists()


# -- jobs, worker and db honour the configuration -----------------------------------------


def test_jobs_worker_and_db_use_the_config_file(db_url: str, tmp_path: Path, workdir: Path) -> None:
    engine = create_engine(db_url, upgrade=True)
    try:
        JobQueue(engine).enqueue("noted", {"out": str(tmp_path / "ran")})
    finally:
        engine.dispose()
    config = _config(tmp_path / "calbridge.toml", db_url)
    (tmp_path / "cfghandlers.py").write_text(
        textwrap.dedent(
            """
            import os
            import pathlib

            from calbridge.jobs import HandlerRegistry


            def handlers(queue):
                seen = os.environ.get("CALBRIDGE_CONFIG", "")
                registry = HandlerRegistry()

                async def noted(job):
                    pathlib.Path(job.payload["out"]).write_text(seen)

                registry.add("noted", noted)
                return registry
            """
        ),
        encoding="utf-8",
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))

    stats = _cli(["jobs", "--config", str(config), "--json"], workdir, env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["queues"]["default"]["queued"] == 1

    ran = _cli(
        ["worker", "--config", str(config), "--handlers", "cfghandlers:handlers", "--once"],
        workdir,
        env,
    )
    assert ran.returncode == 0, ran.stderr
    assert "ran 1 job(s)" in ran.stderr
    # the handlers saw the same configuration file as the worker
    assert (tmp_path / "ran").read_text() == str(config)

    status = _cli(["db", "status", "--json"], workdir, {**env, "CALBRIDGE_CONFIG": str(config)})
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["up_to_date"] is True
    assert not (workdir / "calbridge.db").exists()


def test_database_url_overrides_the_config_file(tmp_path: Path, workdir: Path) -> None:
    real = f"sqlite:///{tmp_path}/real.db"
    create_engine(real, upgrade=True).dispose()
    config = _config(tmp_path / "calbridge.toml", f"sqlite:///{tmp_path}/other.db")
    result = _cli(["db", "status", "--config", str(config), "--database-url", real], workdir)
    assert result.returncode == 0, result.stderr
    assert "real.db" in result.stdout


# -- one option name everywhere; the old spellings still work, with a warning -------------

STORE_COMMANDS = [
    ["keys", "rotate"],
    ["keys", "check"],
    ["jobs"],
    ["worker"],
    ["db", "upgrade"],
    ["db", "status"],
    ["channels"],
    ["accounts"],
    ["route"],
    ["migrate", "plan"],
    ["serve"],
]


def test_every_store_command_takes_config_and_database_url(workdir: Path) -> None:
    for args in STORE_COMMANDS:
        result = _cli([*args, "--help"], workdir)
        assert result.returncode == 0, (args, result.stderr)
        assert "--config" in result.stdout, args
        assert "--database-url" in result.stdout, args
        assert "--store" not in result.stdout, args
        assert " --url" not in result.stdout, args
    providers = _cli(["providers", "--help"], workdir)
    assert "--config" in providers.stdout


@pytest.mark.parametrize(
    ("args", "old"),
    [(["jobs", "--json"], "--store"), (["keys", "check"], "--url"), (["db", "status"], "--url")],
)
def test_old_option_spellings_warn(
    args: list[str], old: str, tmp_path: Path, workdir: Path
) -> None:
    db_url = f"sqlite:///{tmp_path}/old.db"
    create_engine(db_url, upgrade=True).dispose()
    env = _env(CALBRIDGE_KEYS=f"k1:{generate_key()}")
    result = _cli([*args, old, db_url], workdir, env)
    assert result.returncode == 0, result.stderr
    assert f"{old} is deprecated" in result.stderr
    assert "--database-url" in result.stderr
    assert not (workdir / "calbridge.db").exists()


def test_database_url_given_twice_is_a_usage_error(tmp_path: Path, workdir: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/x.db"
    result = _cli(["jobs", "--database-url", db_url, "--store", db_url], workdir)
    assert result.returncode == 2
    assert "once" in result.stderr


# -- keys generate ---------------------------------------------------------------------


def test_keys_generate_never_repeats_a_key_id(workdir: Path) -> None:
    first = _cli(["keys", "generate"], workdir).stdout.strip()
    second = _cli(["keys", "generate"], workdir).stdout.strip()
    a, b = KeyRing.parse(first), KeyRing.parse(second)
    assert a.current != b.current
    assert KeyRing.parse(f"{second},{first}").key_ids == (b.current, a.current)


def test_keys_generate_rejects_a_bad_kid(workdir: Path) -> None:
    result = _cli(["keys", "generate", "--kid", "has space"], workdir)
    assert result.returncode == 2
    assert "key id" in result.stderr


# -- BridgeConfig in code --------------------------------------------------------------


def test_bridge_config_in_code_reads_calbridge_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"k1:{generate_key()}"
    monkeypatch.setenv("CALBRIDGE_KEYS", spec)
    keys = BridgeConfig().keys
    assert keys is not None
    assert keys.reveal() == spec
    assert BridgeConfig(keys="k2:x").keys is not None
    monkeypatch.delenv("CALBRIDGE_KEYS")
    assert BridgeConfig().keys is None


# -- missing extras ----------------------------------------------------------------------

_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Block())
sys.argv = ["calbridge", *{args!r}]
from calbridge.cli import main
main()
"""


def _blocked(blocked: set[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = _BLOCK.format(blocked=sorted(blocked), args=args)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_the_cli_extra_the_script_says_what_to_install(workdir: Path) -> None:
    result = _blocked({"click"}, ["--help"], workdir)
    assert result.returncode == 1
    assert 'pip install "calbridge[cli]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_server_extra_serve_says_what_to_install(tmp_path: Path, workdir: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    result = _blocked({"uvicorn", "starlette"}, ["serve", "--database-url", db], workdir)
    assert result.returncode == 1, result.stderr
    assert 'install "calbridge[server]"' in result.stderr
    assert "Traceback" not in result.stderr
