"""Private PostgreSQL and MariaDB servers that a test may stop and start at will.

The shared servers on 5432/3306 serve every other test (and other people's runs), so the
"database down, then up" tests build their own throwaway instance in a temporary directory,
on a free loopback port, and never touch the shared ones.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "AGENT_SESSION_STORE_REQUIRE_SERVERS"

#: Put in every private server's URL, so the secrets tests can look for it everywhere.
PASSWORD = "pw-Sup3r-S3cret-9f27"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(what: str) -> None:
    message = f"{what} is not installed; the private-server tests need it"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(reason=message)


def _as_user(user: str) -> list[str]:
    # initdb and postgres refuse to run as root; mariadbd switches user itself.
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"private server on port {port} did not start in {seconds}s")


class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir, password-authenticated, on a free port."""

    def __init__(self) -> None:
        initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = initdbs[-1] if initdbs else shutil.which("initdb")
        if initdb is None:
            _missing("PostgreSQL (initdb)")
        self.bin = Path(str(initdb)).parent
        self.dir = Path(tempfile.mkdtemp(prefix="ass-pg-"))
        self.port = _free_port()
        self.url = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(pwfile, "postgres")
        subprocess.run(
            [
                *_as_user("postgres"),
                str(self.bin / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *_as_user("postgres"),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-o",
                options,
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server at once, cutting every connection (``-m immediate``: a crash)."""
        subprocess.run(
            [
                *_as_user("postgres"),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMariaDB:
    """A MariaDB server in a temp dir on a free port (grant tables skipped: any password)."""

    def __init__(self) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        daemon = shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None
        )
        if install is None or daemon is None:
            _missing("MariaDB (mariadb-install-db, mariadbd)")
        self.daemon = str(daemon)
        self.dir = Path(tempfile.mkdtemp(prefix="ass-my-"))
        self.port = _free_port()
        self.url = f"mysql+aiomysql://root:{PASSWORD}@127.0.0.1:{self.port}/rel?charset=utf8mb4"
        self._user = ["--user=mysql"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mysql")
        subprocess.run(
            [
                str(install),
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                *self._user,
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [
                self.daemon,
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.dir / 'sock'}",
                f"--pid-file={self.dir / 'pid'}",
                *self._user,
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                f"--log-error={self.dir / 'err.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)
        import pymysql  # aiomysql's own dependency; a sync client is simplest here

        with pymysql.connect(host="127.0.0.1", port=self.port, user="root") as conn:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS rel CHARACTER SET utf8mb4")

    def stop(self) -> None:
        """Kill the server at once (SIGKILL: a crash) and wait for it to be gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)
        self._process = None

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
