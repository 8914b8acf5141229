"""Watch which worker pool processes are inside a database transaction while a run goes on.

PostgreSQL names each session's client port (`pg_stat_activity.client_port`), and /proc names the
sockets each pool process holds, so a sample says which processes were working at that instant. A test
uses it to show, not assume, that two worker processes did their part of a run at the same time.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import DATABASE_URL
from tests.sampling import sampling

_BUSY = text("SELECT client_port FROM pg_stat_activity WHERE datname = current_database()"
             " AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction') AND client_port > 0")


def children(parent: int) -> list[int]:
    """Return the processes whose parent is `parent` (a Celery worker's pool)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            # The command name is in parentheses and may hold spaces: the parent pid follows the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def local_ports(pid: int) -> set[int]:
    """Return the local TCP ports of the sockets process `pid` holds open."""
    inodes = set()
    try:
        for fd in (Path(f"/proc/{pid}/fd")).iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:  # the process ended, or a descriptor closed while we read
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def busy_pool_processes(worker_pid: int) -> Iterator[list[set[int]]]:
    """Sample, until the block ends, the set of pool processes of `worker_pid` inside a transaction."""
    samples: list[set[int]] = []
    engine = create_engine(DATABASE_URL)

    def sample() -> None:
        with engine.connect() as connection:
            ports = set(connection.execute(_BUSY).scalars())
        if ports:
            samples.append({pid for pid in children(worker_pid) if local_ports(pid) & ports})

    try:
        with sampling(sample, 0.005):
            yield samples
    finally:
        engine.dispose()
