"""Embedded PostgreSQL for development and tests, built on the binaries `pgserver` ships.

We use pgserver's PostgreSQL build but not its `PostgresServer` class, because run as root that
class chmods every ancestor of the data directory AND of the virtualenv's binaries to be group-
and world-readable (e.g. `/root` becomes 0755) and starts postgres with root's groups. Design §8
forbids loosening anything outside our own data directory, so this module:

- puts the data under `/var/tmp/voicegw-<uid>/<project>-<hash>/pgdata` by default: /var/tmp and /
  are already world-traversable, the directories we create there are ours (0711 as root, so the
  postgres user can pass through but not list; 0700 otherwise), and /var/tmp survives reboots;
- never chmods or chowns anything it did not create; if an ancestor of a chosen data directory
  is not traversable by the postgres user it refuses with a clear message instead;
- when the binaries are not readable by the postgres user (a venv under /root), copies them once
  into our own directory rather than opening up the path to them;
- as root runs postgres as the `pgserver` system user (postgres refuses to run as root) with that
  user's own group only, listening on a Unix socket inside the 0700 data directory and on no TCP
  port, so trust authentication admits only root and that user.

A running server is shared: by every process using the same data directory (a pid list under a
file lock; the last process to leave stops it, dead pids are pruned so a crash cannot keep it
alive forever) and by every `EmbeddedPostgres` in one process (a reference count).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG_USER = "postgres"  # the database superuser initdb creates (not an OS user)
OS_USER = "pgserver"  # the OS user postgres runs as when we are root (same name pgserver uses)
PORT = 5432  # socket only; the number just names the socket file
_SOCKET_PATH_MAX = 100  # sun_path is 104 bytes on macOS, 108 on Linux; keep a margin
_START_TIMEOUT_S = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be used here; the message says what to do instead."""


@dataclass(frozen=True, slots=True)
class _RunAs:
    """The OS identity postgres runs as, or None fields for 'the current user'."""

    uid: int | None
    gid: int | None
    name: str

    def can_traverse(self, st: os.stat_result) -> bool:
        if self.uid is None or st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def can_read(self, st: os.stat_result, *, execute: bool = False) -> bool:
        want = stat.S_IRUSR | (stat.S_IXUSR if execute else 0)  # as owner bits, shifted below
        if self.uid is None or st.st_uid == self.uid:
            shift = 0
        elif st.st_gid == self.gid:
            shift = 3
        else:
            shift = 6
        want >>= shift
        return st.st_mode & want == want


def default_base_dir() -> Path:
    """Per-user root for embedded servers: a world-traversable parent, a name we then own."""
    root = Path("/var/tmp")
    if not root.is_dir():
        root = Path(tempfile.gettempdir())
    return root.resolve() / f"voicegw-{os.geteuid()}"


def default_pg_data_dir(state_dir: Path, base_dir: Path | None = None) -> Path:
    """One data directory per project: keyed by the resolved state dir, named for humans."""
    state = state_dir.expanduser().resolve()
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    project = state.parent.name if state.name.startswith(".") else state.name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", project).strip("-.")[:24] or "voicegw"
    return (base_dir or default_base_dir()) / f"{slug}-{digest}" / "pgdata"


def bundled_pg_root() -> Path:
    """The PostgreSQL installation inside the pgserver wheel, found without importing pgserver.

    Importing pgserver would run its module-level setup (a lock under $XDG_RUNTIME_DIR, ...).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "embedded PostgreSQL needs the 'pgserver' package; install it or set DATABASE_URL"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (root / "bin" / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries under {root}; set DATABASE_URL")
    return root


class EmbeddedPostgres:
    """One embedded server (one data directory). `acquire()` before use, `release()` after.

    Both block (they run initdb/pg_ctl); call them through `asyncio.to_thread` from async code.
    """

    _refs: dict[Path, int] = {}
    _refs_lock = threading.Lock()

    def __init__(
        self,
        pgdata: Path,
        *,
        base_dir: Path | None = None,
        pg_root: Path | None = None,
        durable: bool = True,
    ) -> None:
        self.pgdata = Path(os.path.abspath(pgdata.expanduser()))
        self.base_dir = Path(os.path.abspath(base_dir or default_base_dir()))
        self._pg_root = pg_root
        self.durable = durable
        self.socket_dir: Path | None = None
        self._bin_dir: Path | None = None
        key = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        self._lock_path = self.base_dir / "locks" / f"{key}.lock"
        self._holders_path = self.base_dir / "locks" / f"{key}.holders"
        self._fallback_socket_dir = self.base_dir / "sock" / key

    # -- public -------------------------------------------------------------------------------

    def acquire(self) -> str:
        """Make sure the server runs and count this process as a user; returns the socket dir."""
        with self._refs_lock:
            if self._refs.get(self.pgdata, 0) > 0 and self.socket_dir is not None:
                self._refs[self.pgdata] += 1
                return str(self.socket_dir)
            with self._file_lock():
                self.socket_dir = self._ensure_running()
                self._update_holders(add=os.getpid())
            self._refs[self.pgdata] = self._refs.get(self.pgdata, 0) + 1
            return str(self.socket_dir)

    def release(self) -> None:
        """Stop being a user; the last user on the machine stops the server."""
        with self._refs_lock:
            count = self._refs.get(self.pgdata, 0) - 1
            if count < 0:
                return  # never acquired: nothing of ours to give back
            if count > 0:
                self._refs[self.pgdata] = count
                return
            self._refs.pop(self.pgdata, None)
            with self._file_lock():
                remaining = self._update_holders(remove=os.getpid())
                if not remaining and self._is_running() is not None:
                    self._pg_ctl(["-m", "fast", "-w", "-t", str(_START_TIMEOUT_S), "stop"])

    def remove(self) -> None:
        """Stop the server and delete its data (tests; resetting a development database)."""
        with self._refs_lock:
            if self._refs.get(self.pgdata, 0) > 0:
                raise EmbeddedPostgresError(f"{self.pgdata} is in use by this process")
            with self._file_lock():
                others = self._update_holders()
                if others:
                    raise EmbeddedPostgresError(f"{self.pgdata} is in use by pids {others}")
                if self._is_running() is not None:
                    self._pg_ctl(["-m", "fast", "-w", "-t", str(_START_TIMEOUT_S), "stop"])
                shutil.rmtree(self.pgdata, ignore_errors=True)
                shutil.rmtree(self._fallback_socket_dir, ignore_errors=True)
                self._holders_path.unlink(missing_ok=True)
                self._lock_path.unlink(missing_ok=True)  # waiters notice and reopen
                parent = self.pgdata.parent
                if parent != self.base_dir and parent.is_relative_to(self.base_dir):
                    with contextlib.suppress(OSError):
                        parent.rmdir()  # the per-project dir we created, if now empty

    def dsn(self, database: str = "postgres") -> str:
        if self.socket_dir is None:
            raise EmbeddedPostgresError("embedded server not acquired")
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{PG_USER}@/{quote(database, safe='')}?host={host}&port={PORT}"

    # -- start-up -----------------------------------------------------------------------------

    def _ensure_running(self) -> Path:
        running = self._is_running()
        if running is not None:
            return running
        run_as = self._run_as()
        self._check_traversable(self.pgdata.parent, run_as)
        bin_dir = self._bin_dir = self._usable_bin_dir(run_as)
        if not (self.pgdata / "PG_VERSION").exists():
            self._prepare_empty_pgdata(run_as)
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                    "--no-sync",
                ],
                run_as,
            )
        else:
            self._check_owner(self.pgdata, run_as)
        socket_dir = self._socket_dir(run_as)
        options = [
            "-c listen_addresses=''",
            f"-k {shlex.quote(str(socket_dir))}",
            f"-p {PORT}",
            "-c unix_socket_permissions=0700",
        ]
        if not self.durable:  # tests: a lost database is recreated anyway
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._pg_ctl(
            [
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                " ".join(options),
                "start",
            ],
            run_as=run_as,
        )
        started = self._is_running()
        if started is None:
            raise EmbeddedPostgresError(f"postgres did not start; see {self.pgdata}/server.log")
        return started

    def _is_running(self) -> Path | None:
        """The socket dir of a live, ready server on this data dir, from its postmaster.pid."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready" or not lines[4].strip():
            return None
        try:
            os.kill(int(lines[0]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by someone else
        socket_dir = Path(lines[4].strip())
        # A crash leaves postmaster.pid and the socket file behind, and the pid may be reused:
        # only a server accepting on the socket counts as running.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(str(socket_dir / f".s.PGSQL.{lines[3].strip()}"))
        except OSError:
            return None
        finally:
            probe.close()
        return socket_dir

    def _run_as(self) -> _RunAs:
        if os.geteuid() != 0:
            return _RunAs(None, None, "the current user")
        import pwd

        try:
            entry = pwd.getpwnam(OS_USER)
        except KeyError:
            self._create_os_user()
            entry = pwd.getpwnam(OS_USER)
        return _RunAs(entry.pw_uid, entry.pw_gid, OS_USER)

    @staticmethod
    def _create_os_user() -> None:
        shell = next(
            (s for s in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if Path(s).exists()),
            "/bin/false",
        )
        cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
        cmd += ["--home-dir", "/nonexistent", "--shell", shell, OS_USER]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmbeddedPostgresError(
                f"running as root, embedded PostgreSQL needs an OS user '{OS_USER}' and "
                f"useradd failed ({detail.strip()}); create it or set DATABASE_URL"
            ) from exc

    def _check_traversable(self, directory: Path, run_as: _RunAs) -> None:
        """Refuse (never chmod) when the postgres user cannot reach `directory`."""
        self._ensure_parents(directory, run_as)
        for path in (directory, *directory.parents):
            if not run_as.can_traverse(path.stat()):
                raise EmbeddedPostgresError(
                    f"{path} is not traversable by {run_as.name}, which embedded PostgreSQL runs "
                    f"as; voicegw will not loosen its permissions. Choose a data directory "
                    f"elsewhere (VOICEGW_PG_DATA_DIR) or set DATABASE_URL"
                )

    def _ensure_parents(self, directory: Path, run_as: _RunAs) -> None:
        """Create the directories we own (base dir and below) with modes we choose."""
        mode = 0o700 if run_as.uid is None else 0o711
        owned = [self.base_dir]
        if directory.is_relative_to(self.base_dir):
            rel = directory.relative_to(self.base_dir)
            owned += [self.base_dir / Path(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
        for path in owned:
            _own_dir(path, mode)
        if not directory.exists():
            raise EmbeddedPostgresError(f"parent directory {directory} does not exist")

    def _usable_bin_dir(self, run_as: _RunAs) -> Path:
        root = self._pg_root or bundled_pg_root()
        if run_as.uid is None or all(_tree_readable(p, run_as) for p in _install_parts(root)):
            return root / "bin"
        return self._private_copy(root) / "bin"

    def _private_copy(self, root: Path) -> Path:
        """Copy the installation into our base dir, readable by the postgres user.

        The wheel's binaries find their vendored libpq through RPATH `$ORIGIN/../../../
        pgserver.libs`, so the copy keeps that layout: `<copy>/pgserver/pginstall` and
        `<copy>/pgserver.libs`.
        """
        st = (root / "bin" / "postgres").stat()
        key = hashlib.sha256(f"{root.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        target = self.base_dir / f"pginstall-{key.hexdigest()[:12]}"
        installed = target / root.parent.name / root.name
        if (installed / "bin" / "postgres").exists():
            return installed
        _own_dir(self.base_dir, 0o711)
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=self.base_dir))
        try:
            tree = staging / "tree"
            for part in _install_parts(root):
                shutil.copytree(part, tree / part.relative_to(root.parent.parent), symlinks=True)
            for path in [tree, *tree.rglob("*")]:
                if path.is_symlink():
                    continue
                executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
                path.chmod(0o755 if executable else 0o644)
            try:
                os.rename(tree, target)
            except OSError as exc:  # another process won the race
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return installed

    def _prepare_empty_pgdata(self, run_as: _RunAs) -> None:
        if self.pgdata.is_dir():
            if any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} exists, is not a PostgreSQL data directory and is not empty"
                )
        else:
            self.pgdata.mkdir(mode=0o700)
        if run_as.uid is not None and run_as.gid is not None:
            os.chown(self.pgdata, run_as.uid, run_as.gid)
        self.pgdata.chmod(0o700)

    def _check_owner(self, path: Path, run_as: _RunAs) -> None:
        expected = os.geteuid() if run_as.uid is None else run_as.uid
        if path.stat().st_uid != expected:
            raise EmbeddedPostgresError(
                f"{path} is owned by uid {path.stat().st_uid}, not by {run_as.name}; "
                f"choose another data directory or set DATABASE_URL"
            )

    def _socket_dir(self, run_as: _RunAs) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
            return self.pgdata
        path = self._fallback_socket_dir
        _own_dir(path.parent, 0o700 if run_as.uid is None else 0o711)
        path.mkdir(mode=0o700, exist_ok=True)
        if run_as.uid is not None and run_as.gid is not None:
            os.chown(path, run_as.uid, run_as.gid)
        if len(str(path / f".s.PGSQL.{PORT}")) > _SOCKET_PATH_MAX:
            raise EmbeddedPostgresError(f"socket path under {path} is too long")
        return path

    # -- processes ----------------------------------------------------------------------------

    def _pg_ctl(self, args: list[str], run_as: _RunAs | None = None) -> None:
        run_as = run_as or self._run_as()
        bin_dir = self._bin_dir or self._usable_bin_dir(run_as)
        self._run([str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args], run_as)

    @staticmethod
    def _run(cmd: list[str], run_as: _RunAs) -> None:
        # Output goes to a file, not a pipe: postgres inherits pg_ctl's stdout and would hold a
        # pipe open forever, hanging the read.
        with tempfile.TemporaryFile("w+") as out:
            kwargs: dict[str, object] = {}
            if run_as.uid is not None:
                kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                timeout=_START_TIMEOUT_S + 30,
                check=False,
                **kwargs,  # type: ignore[call-overload]
            )
            if result.returncode != 0:
                out.seek(0)
                tail = out.read()[-2000:].strip()
                raise EmbeddedPostgresError(
                    f"{Path(cmd[0]).name} failed with exit code {result.returncode}: {tail}"
                )

    # -- cross-process bookkeeping ------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        _own_dir(self.base_dir, 0o700 if os.geteuid() != 0 else 0o711)
        _own_dir(self._lock_path.parent, 0o700)
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # `remove()` unlinks the lock file; a lock won on an unlinked inode protects nothing.
            try:
                if os.fstat(fd).st_ino == os.stat(self._lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _update_holders(self, *, add: int | None = None, remove: int | None = None) -> list[int]:
        try:
            pids = [int(p) for p in json.loads(self._holders_path.read_text())]
        except (FileNotFoundError, ValueError, TypeError):
            pids = []
        pids = [p for p in pids if p != remove and _pid_alive(p)]
        if add is not None and add not in pids:
            pids.append(add)
        tmp = self._holders_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(pids))
        os.replace(tmp, self._holders_path)
        return pids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_dir(path: Path, mode: int) -> None:
    """Create `path` or accept it only if it is a real directory we own and no one else can write.

    /var/tmp is shared: another user could pre-create our name or plant a symlink there.
    """
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise EmbeddedPostgresError(
            f"{path} exists but is not a directory owned by uid {os.geteuid()}; remove it or "
            f"choose another location (VOICEGW_PG_DATA_DIR)"
        )
    if stat.S_IMODE(st.st_mode) != mode:
        path.chmod(mode)  # ours: created by voicegw, so tightening or setting it is ours to do


def _install_parts(root: Path) -> list[Path]:
    """The installation and the wheel's vendored libraries next to its package, if any."""
    libs = root.parent.parent / f"{root.parent.name}.libs"
    return [root, libs] if libs.is_dir() else [root]


def _tree_readable(root: Path, run_as: _RunAs) -> bool:
    """Whether `run_as` can reach and read every file of the installation under `root`."""
    for path in (root, *root.parents):
        if not run_as.can_traverse(path.stat()):
            return False
    for dirpath, _dirnames, filenames in os.walk(root):
        if not run_as.can_read(os.stat(dirpath), execute=True):
            return False
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            st = os.stat(full)
            if not run_as.can_read(st, execute=bool(st.st_mode & stat.S_IXUSR)):
                return False
    return True
