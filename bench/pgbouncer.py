"""A real PgBouncer (Debian's `pgbouncer`) in front of a PostgreSQL database, running the
pgbouncer.ini that deploy/kubernetes ships with its address and authentication replaced: for
tests/test_pgbouncer.py and `python -m bench.compare --pooling`."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import yaml
from sqlalchemy.engine import make_url

PGBOUNCER = Path("/usr/sbin/pgbouncer")
SHIPPED = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "pgbouncer.yaml"


def shipped_ini() -> configparser.ConfigParser:
    (config_map,) = [
        d for d in yaml.safe_load_all(SHIPPED.read_text()) if d["kind"] == "ConfigMap"
    ]
    ini = configparser.ConfigParser()
    ini.read_string(config_map["data"]["pgbouncer.ini"])
    return ini


@contextmanager
def running_pgbouncer(server_url: str, **settings: str) -> Iterator[str]:
    """The database at `server_url` through a PgBouncer running the shipped configuration with
    `settings` on top; its URL."""
    if not PGBOUNCER.exists():
        raise RuntimeError("pgbouncer is not installed: `make test` installs it with apt")
    server = make_url(server_url)
    folder = Path(tempfile.mkdtemp(prefix="lrsweep-pgbouncer-"))
    folder.chmod(0o755)  # read by the postgres user: PgBouncer will not run as root
    port = _free_port()
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    ini = shipped_ini()
    ini["databases"] = {"*": f"host={server.host} port={server.port or 5432}"}
    ini["pgbouncer"].update(
        listen_addr="127.0.0.1",
        listen_port=str(port),
        auth_type="trust",  # the test server trusts its clients; the shipped one uses SCRAM
        auth_file=str(folder / "users.txt"),
        **settings,
    )
    with (folder / "pgbouncer.ini").open("w") as handle:
        ini.write(handle)
    command = [str(PGBOUNCER), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    bouncer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = server.set(port=port).render_as_string(hide_password=False)
    conninfo = server.set(drivername="postgresql", port=port).render_as_string(hide_password=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if bouncer.poll() is not None or time.monotonic() > deadline:
                bouncer.kill()
                _, stderr = bouncer.communicate()
                raise RuntimeError(f"PgBouncer did not accept connections: {stderr!r}") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        bouncer.terminate()
        bouncer.wait(timeout=10)
        shutil.rmtree(folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
