"""A private Docker engine for tests: Debian's dockerd on a socket of its own.

`DockerEngine(root)` runs dockerd with everything it keeps under `root` (images,
containers, volumes, its socket; its data root a tmpfs) and no host network settings
touched: no iptables rules, no bridge (containers get `--network host` or `none`).

dockerd is started and stopped by a supervisor, `python -m tests.servers.docker_engine
ROOT`, in a session of its own. The supervisor cleans up when its standard input
closes, which happens however the test process ends: a finished or failed run,
Ctrl-C, or a SIGKILL. It then stops dockerd (and so its containers), ends what
is left of containerd and its shims, unmounts everything under ROOT (the FUSE
mounts and shared binds the tests make there included), deletes ROOT, and
removes what dockerd created outside it: its cgroups, /etc/docker/key.json and
/run/docker, when they were not there before.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from bench.relay import die_with_parent
from objmount.mountpoint import unescape_mount_field

START_DEADLINE_S = 60
# The supervisor's clean-up has deadlines of its own (CONTAINER_STOP_S + 20 s for dockerd,
# 10 s for leftovers); deleting what is left of the root takes the rest.
STOP_DEADLINE_S = 300
# dockerd's data root (images, layers, containers: ~1.5 GB for the Docker tier) is a tmpfs
# of at most this size: deleting ~100,000 files from the disk took 115 s at the end of a
# run here (20,000 take 60 s when the disk is busy), unmounting a tmpfs takes none.
DATA_TMPFS_SIZE = "6g"
# Containers get this long to stop on SIGTERM when dockerd shuts down, then SIGKILL.
CONTAINER_STOP_S = 5
# Created by dockerd outside its data and exec roots (Debian's 20.10 has no flag to move them).
DOCKER_ETC = Path("/etc/docker")
DOCKER_RUN = Path("/run/docker")
CGROUP_ROOT = Path("/sys/fs/cgroup")
REQUIRED_PROGRAMS = ("dockerd", "docker", "docker-compose", "mmdebstrap")


def missing_programs() -> list[str]:
    """Return the programs of the Docker tier that are not on PATH."""
    return [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None]


class DockerEngine:
    """dockerd under `root`, through its supervisor; `env` points docker and compose at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.log_path = root.with_name(root.name + ".log")
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}",
                        DOCKER_CONFIG=str(root / "client"),
                        # compose 1.29 runs `docker start --attach` for `run` unless told not to.
                        COMPOSE_INTERACTIVE_NO_CLI="1")
        self._supervisor: subprocess.Popen[str] | None = None

    def start(self) -> Self:
        """Start the supervisor and wait until dockerd answers; raises RuntimeError if not."""
        self._supervisor = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.docker_engine", str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log_path, "w"),  # noqa: SIM115
            text=True, start_new_session=True, cwd=Path(__file__).parents[2],
        )
        assert self._supervisor.stdout is not None
        line = self._supervisor.stdout.readline()  # the supervisor has its own deadline
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"dockerd did not start:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        """Close the supervisor's stdin and wait until it cleaned up; never raises."""
        proc, self._supervisor = self._supervisor, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def docker(self, *args: str, timeout_s: float = 600, check: bool = True,
               env: dict[str, str] | None = None, cwd: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this engine; raise AssertionError with its output."""
        return self._run(["docker", *args], timeout_s, check, env, cwd)

    def compose(self, files: list[Path], *args: str, project: str, timeout_s: float = 600,
                check: bool = True, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        """Run docker-compose with `files` (the first one's directory is the project's)."""
        names = [arg for path in files for arg in ("-f", str(path))]
        return self._run(["docker-compose", "--no-ansi", "-p", project, *names, *args],
                         timeout_s, check, env, None)

    def _run(self, argv: list[str], timeout_s: float, check: bool,
             env: dict[str, str] | None, cwd: Path | None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                                env=self.env | (env or {}), cwd=cwd, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# The supervisor: everything below runs in `python -m tests.servers.docker_engine ROOT`.


def supervise(root: Path) -> None:
    """Start dockerd under `root`, say "ready", and clean up once stdin closes or a signal."""
    _log(f"starting dockerd under {root}")
    root.mkdir(mode=0o700, exist_ok=False)
    cgroup_parent = f"objmount-test-{os.getpid()}"
    created = [path for path in (DOCKER_ETC, DOCKER_RUN) if not path.exists()]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: sys.stdin.close())
    dockerd = None
    try:
        (root / "data").mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DATA_TMPFS_SIZE},mode=0700",
                        "objmount-test-docker", str(root / "data")], check=True)
        dockerd = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "-H", f"unix://{root / 'docker.sock'}", "--pidfile", str(root / "docker.pid"),
             "--cgroup-parent", f"/{cgroup_parent}",
             "--shutdown-timeout", str(CONTAINER_STOP_S)],
            stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        _wait_ready(root / "docker.sock", dockerd)
        _log("dockerd ready")
        print("ready", flush=True)
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.read()  # until the test process closes it, or dies
    finally:
        _log("stopping")
        _stop(dockerd)
        _log("dockerd stopped")
        _kill_processes_under(root)
        for hierarchy in CGROUP_ROOT.glob(f"*/{cgroup_parent}"):
            _remove_cgroup(hierarchy)
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        _unmount_under(root)
        if _mounts_under(root):
            _log(f"still mounted under {root}, not deleted: {_mounts_under(root)}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        _log("cleaned up")


def _log(message: str) -> None:
    print(f"supervisor {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def _wait_ready(sock: Path, dockerd: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while not _ping(sock):
        if dockerd.poll() is not None:
            raise RuntimeError(f"dockerd exited {dockerd.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd not answering after {START_DEADLINE_S}s")
        time.sleep(0.1)


def _ping(sock: Path) -> bool:
    """Return True if the engine answers GET /_ping on `sock`."""
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return conn.recv(64).split(b" ")[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def _stop(dockerd: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM dockerd (it stops its containers), SIGKILL it if it has not exited in time."""
    if dockerd is None or dockerd.poll() is not None:
        return
    dockerd.terminate()
    try:
        dockerd.wait(timeout=CONTAINER_STOP_S + 20)
    except subprocess.TimeoutExpired:
        dockerd.kill()
        dockerd.wait()


def _kill_processes_under(root: Path) -> None:
    """SIGKILL the processes whose command line names `root` (containerd, its shims)."""
    needle = str(root).encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if needle in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                pids.append(int(cmdline.parent.name))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed process disappears from /proc once reaped


def _remove_cgroup(top: Path) -> None:
    """rmdir a cgroup and the containers' cgroups left in it, deepest first (a cgroup
    directory goes with rmdir once no process is in it; its files are not real)."""
    for directory in sorted(top.rglob("*/"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [unescape_mount_field(line.split()[4]) for line in mountinfo]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(inside), key=lambda p: p.count("/"), reverse=True)


def _unmount_under(root: Path) -> None:
    """Detach every mount below `root` (lazily: a busy one goes once unused)."""
    for point in _mounts_under(root):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


if __name__ == "__main__":
    supervise(Path(sys.argv[1]))
