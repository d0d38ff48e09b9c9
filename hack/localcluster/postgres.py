"""A real, throwaway PostgreSQL 15 for the tests, the benchmark and the demo.

Why: the runner's guarantees (transactional DDL, advisory locks, exactly-once batches after a
SIGKILL) are PostgreSQL behaviour; only a real server tests them. This module starts one from the
distribution's server binaries in a private directory, nothing shared with a system cluster:

- `PostgresServer.start(base_dir)` (a context manager): `initdb` into a new temp dir (superuser
  `datamigration`, a random password, scram-sha-256 password auth everywhere), listening only on
  127.0.0.1 at a free port, the unix socket inside the temp dir, default durability settings
  (fsync on: the benchmark compares like with like). `stop()` shuts down fast and removes the dir.
  A watchdog process holds a pipe from the starting process: if that process dies without
  `stop()` (even SIGKILL), the watchdog stops the server and removes the dir, so tests never leave
  postgres processes behind.
- `start_persistent(state_dir)` / `stop_persistent(state_dir)`: one server kept running in
  `state_dir` across processes (for `make demo`): the data stays, the server's pid is the one in
  `postmaster.pid`, the connection details are in `state_dir/server.json`. Calling
  `start_persistent` again returns the running server.

Binaries: `/usr/lib/postgresql/15/bin`, else `pg_config --bindir` if that is PostgreSQL 15. When
missing and running as root on Debian, `postgresql-15` is installed with apt-get; otherwise the
error says what to install. PostgreSQL refuses to run as root, so as root every server command
runs as the `postgres` OS user (`runuser`), which owns the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from localcluster.processes import free_port
from localcluster.waiting import WaitError, wait_for

PG_MAJOR = "15"
DEBIAN_BINDIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
DEBIAN_PACKAGE = f"postgresql-{PG_MAJOR}"
SUPERUSER = "datamigration"
SERVER_OS_USER = "postgres"  # used only when we run as root
START_TIMEOUT = 60
STATE_FILE = "server.json"

# Stops the server when the process that started it goes away without calling stop().
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL could not be found, installed, initialised or started."""


@dataclass
class PostgresServer:
    """A running PostgreSQL we started; `url` reaches its `postgres` database."""

    bindir: Path
    base: Path  # everything of this server lives here
    port: int
    password: str
    user: str = SUPERUSER
    host: str = "127.0.0.1"
    persistent: bool = False
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # -- paths and URLs ---------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3) of the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    # -- lifecycle --------------------------------------------------------------------------------

    @classmethod
    def start(cls, base_dir: Path | None = None) -> PostgresServer:
        """initdb a new cluster in a temp dir under `base_dir` (default: the system temp dir)."""
        bindir = find_bindir()
        if base_dir is not None:
            base_dir.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="datamigration-pg-", dir=base_dir))
        server = cls(bindir=bindir, base=base, port=0, password=secrets.token_hex(16))
        try:
            server._initdb()
            server._watchdog = server._start_watchdog()
            server._start_postmaster()
        except BaseException:
            server.stop()
            raise
        return server

    def create_database(self, name: str) -> str:
        """A fresh, empty database (name sanitised; recreated if it exists); returns its URL."""
        database = database_name(name)
        with self.connect("postgres") as conn:
            identifier = sql.Identifier(database)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(identifier))
        return self.url_for(database)

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg connection (autocommit) as the superuser."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def stop(self) -> None:
        """Fast shutdown; a throwaway server's directory is removed too. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if (self.data_dir / "postmaster.pid").exists():
            result = self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(START_TIMEOUT))
            if result.returncode != 0:
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", str(START_TIMEOUT))
        if not self.persistent:
            shutil.rmtree(self.base, ignore_errors=True)
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=30)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------

    def _initdb(self) -> None:
        for directory in (self.base, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            _give_to_server_user(directory)
        password_file = self.base / "initdb.pw"
        password_file.write_text(self.password + "\n", encoding="ascii")
        _give_to_server_user(password_file)
        try:
            result = _run_as_server_user(
                [
                    str(self.bindir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    self.user,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",  # initdb's own final sync only; the server keeps fsync on
                ],
                cwd=self.base,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stdout}{result.stderr}")
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# datamigration test harness\ninclude_if_exists = 'datamigration.conf'\n")

    def _start_postmaster(self) -> None:
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding it
            self.port = free_port()
            conf = self.data_dir / "datamigration.conf"
            conf.write_text(
                f"listen_addresses = '{self.host}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "logging_collector = off\n",
                encoding="utf-8",
            )
            _give_to_server_user(conf)
            result = self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-l", str(self.log_file))
            if result.returncode == 0:
                self._wait_ready()
                return
            last_error = f"{result.stdout}{result.stderr}\n{_tail(self.log_file)}"
        raise PostgresError(f"PostgreSQL did not start:\n{last_error}")

    def _wait_ready(self) -> None:
        def accepts_connections() -> bool:
            with self.connect("postgres") as conn:
                conn.execute("SELECT 1")
            return True

        try:
            wait_for(
                "PostgreSQL to accept connections",
                accepts_connections,
                timeout=START_TIMEOUT,
                diagnostics=lambda: _tail(self.log_file),
            )
        except WaitError as exc:
            raise PostgresError(str(exc)) from None

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run_as_server_user(
            [str(self.bindir / "pg_ctl"), "--pgdata", str(self.data_dir), *args], cwd=self.base
        )

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        pg_ctl = str(self.bindir / "pg_ctl")
        stop = [
            *_server_user_prefix(),
            pg_ctl,
            "--pgdata",
            str(self.data_dir),
            "stop",
            "-m",
            "immediate",
        ]
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.base), *stop],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the test run must not kill it first
        )


# -- persistent server (make demo) ----------------------------------------------------------------


def start_persistent(state_dir: Path) -> PostgresServer:
    """Start (or find running) the PostgreSQL kept in `state_dir`; it outlives this process."""
    state_dir = state_dir.resolve()
    state_file = state_dir / STATE_FILE
    if state_file.exists():
        server = _load_persistent(state_dir)
        if server._pg_ctl("status").returncode == 0:
            return server
        server._start_postmaster()
        _save_persistent(server)
        return server
    bindir = find_bindir()
    state_dir.mkdir(parents=True, exist_ok=True)
    _check_traversable(state_dir)
    server = PostgresServer(
        bindir=bindir, base=state_dir, port=0, password=secrets.token_hex(16), persistent=True
    )
    server._initdb()
    server._start_postmaster()
    _save_persistent(server)
    return server


def stop_persistent(state_dir: Path, *, remove: bool = False) -> None:
    """Stop the PostgreSQL kept in `state_dir` (no-op if none); `remove` also deletes its data."""
    state_dir = state_dir.resolve()
    if (state_dir / STATE_FILE).exists():
        _load_persistent(state_dir).stop()
    if remove:
        shutil.rmtree(state_dir, ignore_errors=True)


def _save_persistent(server: PostgresServer) -> None:
    state = {"port": server.port, "password": server.password, "user": server.user}
    state_file = server.base / STATE_FILE
    state_file.write_text(json.dumps(state), encoding="utf-8")
    state_file.chmod(0o600)


def _load_persistent(state_dir: Path) -> PostgresServer:
    state = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    return PostgresServer(
        bindir=find_bindir(),
        base=state_dir,
        port=int(state["port"]),
        password=str(state["password"]),
        user=str(state["user"]),
        persistent=True,
    )


# -- helpers --------------------------------------------------------------------------------------


def find_bindir() -> Path:
    """The PostgreSQL 15 server binaries, installing them on Debian as root if missing."""
    found = _existing_bindir()
    if found is not None:
        return found
    if os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", DEBIAN_PACKAGE],
        ):
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                raise PostgresError(
                    f"installing {DEBIAN_PACKAGE} failed ({' '.join(command)}):\n"
                    f"{result.stderr[-2000:]}"
                )
        found = _existing_bindir()
        if found is not None:
            return found
    raise PostgresError(
        f"PostgreSQL {PG_MAJOR} server binaries not found (looked in {DEBIAN_BINDIR} and "
        f"`pg_config --bindir`). Install them: `apt-get install {DEBIAN_PACKAGE}` on "
        f"Debian/Ubuntu, or put the pg_config of a PostgreSQL {PG_MAJOR} installation on PATH."
    )


def _existing_bindir() -> Path | None:
    candidates = [DEBIAN_BINDIR]
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    for bindir in candidates:
        postgres = bindir / "postgres"
        if not (postgres.is_file() and (bindir / "initdb").is_file()):
            continue
        version = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, check=False
        ).stdout
        if re.search(rf"\b{PG_MAJOR}\.\d+", version):
            return bindir
    return None


def database_name(name: str) -> str:
    """A safe database name for any string (e.g. a pytest node name with brackets)."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "db"
    if cleaned[0].isdigit():
        cleaned = f"db_{cleaned}"
    if cleaned != name or len(cleaned) > 63:
        # Different originals must not collide after cleaning.
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:54]}_{digest}"
    return cleaned


def _server_user_prefix() -> list[str]:
    return ["runuser", "-u", SERVER_OS_USER, "--"] if os.geteuid() == 0 else []


def _run_as_server_user(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _server_user_prefix() + command, cwd=cwd, capture_output=True, text=True, check=False
    )


def _give_to_server_user(path: Path) -> None:
    """As root, the server's OS user must own its files; otherwise we already do."""
    if os.geteuid() != 0:
        return
    try:
        shutil.chown(path, user=SERVER_OS_USER, group=SERVER_OS_USER)
    except LookupError:
        raise PostgresError(
            f"running as root needs the `{SERVER_OS_USER}` OS user to run PostgreSQL "
            f"(it comes with the {DEBIAN_PACKAGE} package)"
        ) from None
    path.chmod(0o700 if path.is_dir() else 0o600)


def _check_traversable(directory: Path) -> None:
    """As root, the server user must be able to reach `directory` through its parents."""
    if os.geteuid() != 0:
        return
    for parent in directory.parents:
        if not parent.stat().st_mode & 0o001:
            raise PostgresError(
                f"{parent} is not searchable by other users, so the `{SERVER_OS_USER}` user "
                f"cannot reach {directory}; choose a state directory elsewhere (e.g. under /tmp)"
            )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
