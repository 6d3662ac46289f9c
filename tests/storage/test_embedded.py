"""Embedded PostgreSQL: never loosens permissions outside its own directory; shared safely.

Run as root, pgserver's own start-up would chmod every ancestor of its data directory and of
the virtualenv's binaries; these tests pin down that ours changes nothing it does not own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import asyncpg
import pytest

from gateway.config import Settings
from gateway.db import Database
from gateway.storage.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    bundled_pg_root,
    default_base_dir,
    default_pg_data_dir,
)

REPO = Path(__file__).resolve().parents[2]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the permission hazard exists as root")


def _lineage(path: Path) -> list[Path]:
    path = Path(os.path.abspath(path))
    return [p for p in (path, *path.parents) if p.exists()]


def _modes(paths: Iterable[Path]) -> dict[str, tuple[int, int, int]]:
    """Mode and ownership of each path; the whole tree for the PostgreSQL installation."""
    out: dict[str, tuple[int, int, int]] = {}
    for path in paths:
        st = path.lstat()
        out[str(path)] = (st.st_mode, st.st_uid, st.st_gid)
    return out


def _install_tree() -> list[Path]:
    root = bundled_pg_root()
    libs = root.parent.parent / "pgserver.libs"  # the wheel's vendored libpq (RPATH)
    return [*_lineage(root), *root.rglob("*"), *_lineage(libs), *libs.rglob("*")]


@pytest.fixture
def fresh_base() -> Iterator[Path]:
    """A not-yet-existing base dir in /var/tmp (world-traversable), removed afterwards."""
    base = default_base_dir().parent / f"voicegw-test-{uuid.uuid4().hex[:10]}"
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_default_location_is_per_user_and_per_project(tmp_path: Path) -> None:
    a = default_pg_data_dir(tmp_path / "one" / ".voicegw")
    b = default_pg_data_dir(tmp_path / "two" / ".voicegw")
    assert a != b and a.name == b.name == "pgdata"
    assert a.parent.parent == default_base_dir()
    assert default_base_dir().name == f"voicegw-{os.geteuid()}"
    assert a.parent.name.startswith("one-")  # readable: the project directory's name
    assert default_pg_data_dir(tmp_path / "one" / "x" / ".." / ".voicegw") == a


async def test_starting_changes_no_permission_outside_its_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "repo" / ".voicegw"
    state_dir.mkdir(parents=True)
    pgdata = default_pg_data_dir(state_dir)
    watched = [
        *_lineage(pgdata),  # /, /var, /var/tmp, and our base dir if it already exists
        *_lineage(state_dir),  # includes pytest's 0700 tmp root
        *_lineage(REPO),
        *_install_tree(),
    ]
    before = _modes(watched)
    assert not pgdata.exists()

    settings = Settings(state_dir=state_dir, database_url=None, pg_data_dir=None)
    db = await Database.open(settings)
    embedded = db.embedded
    assert embedded is not None
    try:
        assert await db.pool.fetchval("SELECT current_database()") == "voicegw"
        assert _modes(watched) == before

        # What we created is ours, and no wider than the postgres user needs.
        private = 0o700 if os.geteuid() != 0 else 0o711
        assert stat.S_IMODE(pgdata.parent.stat().st_mode) == private
        assert stat.S_IMODE(default_base_dir().stat().st_mode) == private
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
        assert not any(
            p.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH) for p in (pgdata, pgdata.parent)
        )
        assert sorted(os.listdir(state_dir)) == []  # the state dir holds no database files
    finally:
        await db.close()
        await asyncio.to_thread(embedded.remove)
    assert _modes(watched) == before
    assert not pgdata.exists()


@as_root
def test_refuses_a_data_dir_the_postgres_user_cannot_reach(tmp_path: Path, fresh_base) -> None:
    # pytest's tmp root is 0700: pgserver would have opened it (and its parents) to everyone.
    pgdata = tmp_path / "db" / "pgdata"
    pgdata.parent.mkdir()
    watched = [*_lineage(pgdata.parent), *_install_tree()]
    before = _modes(watched)
    embedded = EmbeddedPostgres(pgdata, base_dir=fresh_base)
    with pytest.raises(EmbeddedPostgresError, match="not traversable by pgserver"):
        embedded.acquire()
    assert _modes(watched) == before
    assert not pgdata.exists()


@as_root
async def test_unreadable_binaries_are_copied_not_opened_up(tmp_path: Path, fresh_base) -> None:
    # A venv under a private directory (think /root/project/.venv): give it a private copy.
    private = fresh_base.parent / f"{fresh_base.name}-private"
    private.mkdir(mode=0o700)
    try:
        root = bundled_pg_root()
        shutil.copytree(root, private / "pgserver" / "pginstall", symlinks=True)
        shutil.copytree(root.parent.parent / "pgserver.libs", private / "pgserver.libs")
        watched = [*_lineage(private), *private.rglob("*")]
        before = _modes(watched)
        embedded = EmbeddedPostgres(
            fresh_base / "inst" / "pgdata",
            base_dir=fresh_base,
            pg_root=private / "pgserver" / "pginstall",
            durable=False,
        )
        await asyncio.to_thread(embedded.acquire)
        try:
            conn = await asyncpg.connect(embedded.dsn())
            await conn.close()
            copies = list(fresh_base.glob("pginstall-*"))
            assert len(copies) == 1
            assert (copies[0] / "pgserver" / "pginstall" / "bin" / "postgres").exists()
            pid = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
            exe = Path(os.readlink(f"/proc/{pid}/exe"))
            assert exe.is_relative_to(copies[0])
            assert _modes(watched) == before
        finally:
            await asyncio.to_thread(embedded.release)
            await asyncio.to_thread(embedded.remove)
    finally:
        shutil.rmtree(private, ignore_errors=True)


_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gateway.storage.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(Path(sys.argv[1]), base_dir=Path(sys.argv[2]), durable=False)
    pg.acquire()
    print((pg.pgdata / "postmaster.pid").read_text().split()[0], flush=True)
    if sys.stdin.readline().strip() == "release":
        pg.release()
        print("released", flush=True)
    sys.stdin.readline()  # exit (or be killed) when told
    """
)


def _postmaster_pid(embedded: EmbeddedPostgres) -> int | None:
    try:
        return int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


def _spawn_holder(embedded: EmbeddedPostgres) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(embedded.pgdata), str(embedded.base_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_a_running_server_is_shared_across_processes(fresh_base: Path) -> None:
    embedded = EmbeddedPostgres(fresh_base / "inst" / "pgdata", base_dir=fresh_base, durable=False)
    embedded.acquire()
    try:
        ours = _postmaster_pid(embedded)
        # Another process joins the same server and leaves: the server keeps running for us.
        other = _spawn_holder(embedded)
        assert other.stdout is not None and other.stdin is not None
        assert int(other.stdout.readline()) == ours
        other.stdin.write("release\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "released"
        other.stdin.write("exit\n")
        other.stdin.flush()
        assert other.wait(timeout=30) == 0
        assert _postmaster_pid(embedded) == ours and embedded._is_running() is not None

        # A process that joins and dies without releasing cannot keep the server alive forever.
        crashed = _spawn_holder(embedded)
        assert crashed.stdout is not None
        assert int(crashed.stdout.readline()) == ours
        crashed.kill()
        crashed.wait(timeout=30)
    finally:
        embedded.release()
    assert embedded._is_running() is None  # we were the last live user: it stopped
    embedded.remove()


def test_in_process_users_are_counted(fresh_base: Path) -> None:
    pgdata = fresh_base / "inst" / "pgdata"
    first = EmbeddedPostgres(pgdata, base_dir=fresh_base, durable=False)
    second = EmbeddedPostgres(pgdata, base_dir=fresh_base, durable=False)
    first.acquire()
    second.acquire()
    first.release()
    assert second._is_running() is not None
    second.release()
    assert second._is_running() is None
    second.remove()
