"""A throw-away PostgreSQL cluster for tests: initdb in a temp folder, listening only on a unix socket there.

As root, the server runs as the `postgres` system user (created by the Debian package; created here if missing),
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("initdb", "pg_ctl", "postgres")
_counter = itertools.count()


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: on PATH, or Debian's /usr/lib/postgresql/<ver>/bin."""
    on_path = [shutil.which(b) for b in BINARIES]
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if all((Path(d) / b).exists() for b in BINARIES):
            return Path(d)
    return None


def _server_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True, capture_output=True)
    return "postgres"


class Cluster:
    """One initdb'd data folder and its server; `url(db)` names a database in it."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="sp-pg-"))
        self.data = self.dir / "data"
        os.chmod(self.dir, 0o755)
        if self.user is not None:
            shutil.chown(self.dir, self.user)
        self._as_server([str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                         "-E", "UTF8", "--no-sync"])
        opts = {"listen_addresses": "''", "unix_socket_directories": f"'{self.dir}'", "fsync": "off",
                "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "200",
                "shared_buffers": "32MB"}
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in opts.items())
        self.start()

    def _as_server(self, cmd: list[str], timeout: float = 120) -> str:
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self._as_server([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                         "-w", "-t", "60", "start"])

    def stop(self) -> None:
        self._as_server([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.dir}"

    def sql(self, query: str, params: tuple = (), db: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    @staticmethod
    def db_name(url: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url)["dbname"]

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def terminate_backends(self, db_url: str) -> int:
        """pg_terminate_backend every connection to the database of `db_url` (as a failover would)."""
        db = self.db_name(db_url)
        rows = self.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s "
                        "AND pid <> pg_backend_pid()", (db,))
        return len(rows)

    def destroy(self) -> None:
        try:  # immediate: a throw-away cluster needs no shutdown checkpoint
            self._as_server([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
