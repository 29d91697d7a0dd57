"""A real OpenStack Swift + Keystone stack on 127.0.0.1, started by the tests.

Keystone (sqlite, fernet tokens) is served by a threaded werkzeug server; Swift runs
a proxy (authtoken + keystoneauth, tempauth beside them for v1 auth, bulk, SLO, DLO,
an in-process cache instead of memcached) and account, container and object
servers over one-replica rings. Each server is a subprocess in its own process group,
logs to ``<base_dir>/logs/<name>.log`` and gets SIGTERM from Linux when the thread
that started it exits, so no server outlives the test run.

``python -m tests.servers.swift_stack`` starts a stack, runs a smoke test, stops it.
This file is also the servers' entry point (``python swift_stack.py _keystone ...``),
hence the stdlib-only top-level imports.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import grp
import hashlib
import importlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    from keystoneauth1.session import Session
    from swiftclient.client import Connection

HOST = "127.0.0.1"
TEMPAUTH_USER = "test:tester"  # tempauth's account:user
TEMPAUTH_KEY = "testing"
MEMBER_ROLE = "member"
_DEVICE = "d0"
_PARENT_PID_ENV = "SWIFT_STACK_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_SWIFT_MODULES = {
    "account": "swift.account.server",
    "container": "swift.container.server",
    "object": "swift.obj.server",
    "proxy": "swift.proxy.server",
}
# Port offsets from the stack's first port; swift's object, container and
# account servers sit on consecutive ports.
_PORT_OFFSETS = {"keystone": 0, "proxy": 1, "object": 2, "container": 3, "account": 4}
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Credential = tuple[str, str]
"""An application credential as ``(id, secret)``."""


class SwiftStackError(RuntimeError):
    """The stack failed to start; the message ends with the servers' log tails."""


class SwiftStack:
    """Keystone + Swift on 127.0.0.1 with a user, a project and an application credential.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Start it from a
    thread that outlives the stack (the servers die with that thread). A stopped
    stack can be started again: ports, data and identities are kept.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        token_expiration_s: int = 3600,
        region: str = "CHI@TACC",
        token_cache_s: int = -1,
        start_timeout_s: float = 60.0,
        python: str | None = None,
        workers: int = 0,
    ) -> None:
        """Describe a stack living under ``base_dir``; nothing runs before :meth:`start`.

        ``token_expiration_s`` is Keystone's ``[token] expiration`` (keystoneauth1
        re-authenticates whenever its token has less than 120 s left, so a shorter
        lifetime means one new token per request for its users). ``token_cache_s`` is
        how long the proxy's authtoken caches a validated token: -1 (never) makes a
        revoked credential fail at once and costs ~20 ms per request, as Keystone
        caches in memory. ``python`` runs the servers (an interpreter with keystone
        and swift installed; defaults to the current one). ``workers`` is each Swift
        server's ``workers`` setting: 0 (one process, the tests' choice) or N worker
        processes forked by it (the benchmark's, as deployments run them).
        """
        self.base_dir = Path(base_dir).resolve()
        self.logs_dir = self.base_dir / "logs"
        self.token_expiration_s = token_expiration_s
        self.region = region
        self.token_cache_s = token_cache_s
        self.start_timeout_s = start_timeout_s
        self.python = python or sys.executable
        self.workers = workers
        self.username = "objmount-user"
        self.password = secrets.token_urlsafe(16)
        self.project_name = "objmount-project"
        self.app_cred_name = "objmount-rclone"
        self.user_id = ""
        self.project_id = ""
        self.app_cred_id = ""
        self.app_cred_secret = ""
        self._admin_password = secrets.token_urlsafe(16)
        self._first_port = _free_port_run(len(_PORT_OFFSETS))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- addresses -------------------------------------------------------------

    def port(self, server: str) -> int:
        """TCP port of ``server`` (keystone, proxy, object, container, account)."""
        return self._first_port + _PORT_OFFSETS[server]

    @property
    def auth_url(self) -> str:
        """Keystone v3 URL."""
        return f"http://{HOST}:{self.port('keystone')}/v3"

    @property
    def proxy_url(self) -> str:
        """Swift proxy root URL."""
        return f"http://{HOST}:{self.port('proxy')}"

    @property
    def storage_url(self) -> str:
        """Swift account URL of the project."""
        return f"{self.proxy_url}/v1/AUTH_{self.project_id}"

    @property
    def v1_auth_url(self) -> str:
        """Swift's own v1 auth (tempauth), beside Keystone: user TEMPAUTH_USER, key TEMPAUTH_KEY."""
        return f"{self.proxy_url}/auth/v1.0"

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each running server, by name."""
        return {name: proc.pid for name, proc in self._procs.items()}

    # -- life cycle ------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start every server and wait until an authenticated Swift request works."""
        if self._procs:
            raise SwiftStackError("stack already started")
        deadline = time.monotonic() + self.start_timeout_s
        try:
            self._prepare()
            atexit.register(self.stop)
            for server in ("keystone", "account", "container", "object", "proxy"):
                self._spawn(server)
            self._wait("keystone", lambda: _http_ok(self.auth_url), deadline)
            if not self.user_id:
                self._provision()
            self._wait("swift servers", self._backends_listen, deadline)
            self._wait("swift proxy", lambda: _http_ok(f"{self.proxy_url}/healthcheck"), deadline)
            self._wait("authenticated swift", self._account_reachable, deadline)
        except BaseException as exc:
            message = f"Swift stack failed to start: {exc!r}\n{self.log_tail(40)}"
            self.stop()
            if isinstance(exc, Exception):
                raise SwiftStackError(message) from exc
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every server's process group, SIGKILL those still alive after ``timeout_s``."""
        procs, self._procs = list(self._procs.values()), {}
        atexit.unregister(self.stop)
        for proc in procs:
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()

    def log_tail(self, n_lines: int = 50) -> str:
        """The last ``n_lines`` of every server log, each under a header."""
        parts = []
        for path in sorted(self.logs_dir.glob("*.log")):
            with path.open(errors="replace") as log:
                tail = collections.deque(log, maxlen=n_lines)
            parts.append(f"==> {path} <==\n{''.join(tail)}")
        return "\n".join(parts)

    # -- identities and clients ------------------------------------------------

    def admin_session(self) -> Session:
        """A keystoneauth1 session of Keystone's bootstrap admin (project ``admin``)."""
        from keystoneauth1.identity import v3

        return _session(
            v3.Password(
                auth_url=self.auth_url,
                username="admin",
                password=self._admin_password,
                user_domain_id="default",
                project_name="admin",
                project_domain_id="default",
            )
        )

    def user_session(self) -> Session:
        """A keystoneauth1 session of the test user, password auth, scoped to its project."""
        from keystoneauth1.identity import v3

        return _session(
            v3.Password(
                auth_url=self.auth_url,
                user_id=self.user_id,
                password=self.password,
                project_id=self.project_id,
            )
        )

    def app_cred_session(self, credential: Credential | None = None) -> Session:
        """A keystoneauth1 session of an application credential (default: the stack's)."""
        from keystoneauth1.identity import v3

        cred_id, secret = credential or (self.app_cred_id, self.app_cred_secret)
        return _session(
            v3.ApplicationCredential(
                auth_url=self.auth_url,
                application_credential_id=cred_id,
                application_credential_secret=secret,
            )
        )

    def swift_connection(self, credential: Credential | None = None) -> Connection:
        """A python-swiftclient connection through the catalog, for test set-up."""
        from swiftclient.client import Connection

        return Connection(
            session=self.app_cred_session(credential),
            os_options={"region_name": self.region},
            retries=1,
        )

    def new_app_credential(self, name: str) -> Credential:
        """Create an application credential of the test user (as that user)."""
        from keystoneclient.v3.client import Client

        cred = Client(session=self.user_session()).application_credentials.create(
            name=name, user=self.user_id
        )
        return cred.id, cred.secret

    def revoke_app_credential(self, cred_id: str) -> None:
        """Delete an application credential; Keystone then rejects its tokens."""
        from keystoneclient.v3.client import Client

        Client(session=self.user_session()).application_credentials.delete(
            cred_id, user=self.user_id
        )

    def rclone_conf_section(self, name: str, credential: Credential | None = None) -> str:
        """An rclone.conf swift remote using an application credential (default: the stack's)."""
        cred_id, secret = credential or (self.app_cred_id, self.app_cred_secret)
        return (
            f"[{name}]\n"
            "type = swift\n"
            f"user_id = {self.user_id}\n"
            f"application_credential_id = {cred_id}\n"
            f"application_credential_secret = {secret}\n"
            f"auth = {self.auth_url}\n"
            f"region = {self.region}\n"
        )

    def openrc_env(self, credential: Credential | None = None) -> dict[str, str]:
        """OS_* variables of an application-credential openrc (default: the stack's credential)."""
        cred_id, secret = credential or (self.app_cred_id, self.app_cred_secret)
        return {
            "OS_AUTH_URL": self.auth_url,
            "OS_AUTH_TYPE": "v3applicationcredential",
            "OS_APPLICATION_CREDENTIAL_ID": cred_id,
            "OS_APPLICATION_CREDENTIAL_SECRET": secret,
            "OS_REGION_NAME": self.region,
            "OS_INTERFACE": "public",
            "OS_IDENTITY_API_VERSION": "3",
        }

    # -- internals -------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the directories and write every configuration file."""
        keystone_dir, swift_dir = self.base_dir / "keystone", self.base_dir / "swift"
        device = self.base_dir / "srv" / _DEVICE
        for directory in (self.logs_dir, keystone_dir, swift_dir, device, self.base_dir / "recon"):
            directory.mkdir(parents=True, exist_ok=True)
        _check_user_xattrs(device)
        (keystone_dir / "keystone.conf").write_text(self._keystone_conf())
        (swift_dir / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = objmount-tests\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )
        for server in ("account", "container", "object"):
            (swift_dir / f"{server}-server.conf").write_text(
                self._swift_defaults(server) + f"[pipeline:main]\npipeline = {server}-server\n\n"
                f"[app:{server}-server]\nuse = egg:swift#{server}\n"
            )
        (swift_dir / "proxy-server.conf").write_text(self._proxy_conf())

    def _keystone_conf(self) -> str:
        directory = self.base_dir / "keystone"
        return (
            f"[database]\nconnection = sqlite:///{directory}/keystone.db\n\n"
            f"[token]\nprovider = fernet\nexpiration = {self.token_expiration_s}\n\n"
            f"[fernet_tokens]\nkey_repository = {directory}/fernet-keys\n\n"
            f"[fernet_receipts]\nkey_repository = {directory}/fernet-keys\n\n"
            f"[credential]\nkey_repository = {directory}/credential-keys\n\n"
            # bcrypt's default cost makes every password check ~0.3 s
            "[identity]\npassword_hash_rounds = 4\n\n"
            "[cache]\nenabled = true\nbackend = oslo_cache.dict\n"
        )

    def _swift_defaults(self, server: str) -> str:
        # Swift always adds a syslog handler (UDP to localhost:514 without
        # /dev/log): aim it at the discard port of 127.0.0.1; "--verbose" copies
        # the log to stderr, which goes to the log file.
        return (
            f"[DEFAULT]\nbind_ip = {HOST}\nbind_port = {self.port(server)}\n"
            f"workers = {self.workers}\n"
            f"user = {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"swift_dir = {self.base_dir / 'swift'}\ndevices = {self.base_dir / 'srv'}\n"
            f"mount_check = false\nrecon_cache_path = {self.base_dir / 'recon'}\n"
            f"log_name = {server}-server\nlog_udp_host = {HOST}\nlog_udp_port = 9\n\n"
        )

    def _proxy_conf(self) -> str:
        filters = ("catch_errors", "gatekeeper", "healthcheck", "proxy-logging", "listing_formats")
        # bulk after the auth filters: the objects of an uploaded archive are then
        # stored without validating the token again for each of them.
        filters += ("bulk", "copy", "slo", "dlo", "versioned_writes")
        sections = "".join(
            f"[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}\n\n" for name in filters
        )
        return (
            self._swift_defaults("proxy")
            + "[pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging"
            " cache listing_formats authtoken keystoneauth tempauth bulk copy slo dlo"
            " versioned_writes proxy-logging proxy-server\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            f"{sections}"
            # Instead of memcached: the proxy's account and container info, which it
            # otherwise fetches from the account and container servers for every
            # request (two to four extra requests each).
            f"[filter:cache]\npaste.filter_factory = {Path(__file__).stem}:memory_cache_filter\n\n"
            "[filter:authtoken]\n"
            "paste.filter_factory = keystonemiddleware.auth_token:filter_factory\n"
            f"www_authenticate_uri = {self.auth_url}\nauth_url = {self.auth_url}\n"
            "auth_type = password\nusername = admin\n"
            f"password = {self._admin_password}\nuser_domain_id = default\n"
            "project_name = admin\nproject_domain_id = default\n"
            f"token_cache_time = {self.token_cache_s}\ninclude_service_catalog = false\n"
            # Tokens Keystone does not know go on to tempauth, which has its own
            # accounts (TEMP_*): keystoneauth still refuses them for AUTH_* accounts.
            "delay_auth_decision = true\n\n"
            "[filter:keystoneauth]\nuse = egg:swift#keystoneauth\n"
            f"operator_roles = admin, {MEMBER_ROLE}\n\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\nreseller_prefix = TEMP\n"
            f"user_{TEMPAUTH_USER.replace(':', '_')} = {TEMPAUTH_KEY} .admin\n"
        )

    def _spawn(self, server: str) -> None:
        swift_dir = self.base_dir / "swift"
        env = {**os.environ, "PYTHONWARNINGS": "ignore", _PARENT_PID_ENV: str(os.getpid())}
        if server == "keystone":
            args = ["_keystone", str(self.port("keystone"))]
            env["OS_KEYSTONE_CONFIG_FILES"] = str(self.base_dir / "keystone" / "keystone.conf")
            env["OS_BOOTSTRAP_PASSWORD"] = self._admin_password
            env["OS_BOOTSTRAP_REGION_ID"] = self.region
            for interface in ("PUBLIC", "INTERNAL", "ADMIN"):
                env[f"OS_BOOTSTRAP_{interface}_URL"] = self.auth_url
        else:
            args = ["_swift", server, str(swift_dir / f"{server}-server.conf")]
            if server == "proxy":
                args.append(str(self.port("object")))
        with (self.logs_dir / f"{server}.log").open("ab") as log:
            self._procs[server] = subprocess.Popen(
                [self.python, __file__, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base_dir,
                start_new_session=True,
            )

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Poll ``ready`` until it holds; fail when a server dies or at ``deadline``."""
        last_error: Exception | None = None
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SwiftStackError(f"{name} exited with status {proc.returncode}")
            try:
                if ready():
                    return
            except Exception as exc:  # retried until the deadline
                last_error = exc
            if time.monotonic() > deadline:
                reason = f": {last_error!r}" if last_error else ""
                raise SwiftStackError(f"{what} not ready before the deadline{reason}")
            time.sleep(0.05)

    def _backends_listen(self) -> bool:
        for server in ("account", "container", "object"):
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.port(server))) != 0:
                    return False
        return True

    def _account_reachable(self) -> bool:
        self.swift_connection().head_account()
        return True

    def _provision(self) -> None:
        """Register Swift in the catalog; create project, user, role assignment, app credential."""
        from keystoneclient.v3.client import Client

        admin = Client(session=self.admin_session())
        service = admin.services.create(name="swift", type="object-store")
        for interface in ("public", "internal", "admin"):
            admin.endpoints.create(
                service=service,
                url=f"{self.proxy_url}/v1/AUTH_%(project_id)s",
                interface=interface,
                region=self.region,
            )
        project = admin.projects.create(name=self.project_name, domain="default")
        user = admin.users.create(
            name=self.username, domain="default", password=self.password, default_project=project
        )
        admin.roles.grant(admin.roles.list(name=MEMBER_ROLE)[0], user=user, project=project)
        self.project_id, self.user_id = project.id, user.id
        self.app_cred_id, self.app_cred_secret = self.new_app_credential(self.app_cred_name)


def _session(auth: object) -> Session:
    from keystoneauth1.session import Session

    return Session(auth=auth)


def _http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port_run(length: int) -> int:
    """First port of ``length`` consecutive free ports on 127.0.0.1, below the ephemeral
    range (tests/servers/net.py says why: a port from it can be taken by a client
    connection before the server binds it, and the server fails to start)."""
    from tests.servers.net import free_port_run  # not at the top: servers run this file alone

    try:
        return free_port_run(length)
    except RuntimeError as exc:
        raise SwiftStackError(str(exc)) from None


def _check_user_xattrs(directory: Path) -> None:
    probe = directory / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.swift-stack", b"1")
    except OSError as exc:
        raise SwiftStackError(
            f"{directory} is on a filesystem without user xattrs, which Swift's object "
            f"server needs: use a base directory elsewhere (ext4, xfs, tmpfs): {exc}"
        ) from exc
    finally:
        probe.unlink()


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


# -- server processes ----------------------------------------------------------


def _die_with_parent() -> None:
    """Have Linux SIGTERM this process when the thread that started it exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ[_PARENT_PID_ENV]):
        sys.exit("parent already gone")


def _serve_keystone(port: int) -> None:
    """Set Keystone up on first start (one process: fast), then serve it."""
    sys.argv = sys.argv[:1]  # keystone's option parser reads sys.argv
    from keystone.cmd import cli
    from keystone.common import provider_api
    from keystone.server import wsgi
    from werkzeug.serving import make_server

    conf = os.environ["OS_KEYSTONE_CONFIG_FILES"]
    done = Path(conf).with_name("bootstrapped")
    if not done.exists():
        owner = ["--keystone-user", pwd.getpwuid(os.getuid()).pw_name]
        owner += ["--keystone-group", grp.getgrgid(os.getgid()).gr_name]
        commands = (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner])
        for command in (*commands, ["bootstrap"]):
            cli.main(argv=["keystone-manage", "--config-file", conf, *command])
            cli.CONF.clear()
        cli.CONF.unregister_opt(cli.command_opt)
        provider_api.ProviderAPIs._clear_registry_instances()  # as keystone's own tests do
        done.touch()
    make_server(HOST, port, wsgi.initialize_public_application(), threaded=True).serve_forever()


class _MemoryCache:
    """The part of swift's MemcacheRing the proxy uses, in this process's memory.

    Values are stored serialized, as memcached would, so that no caller shares
    a mutable object with another; ``time`` is a lifetime in seconds.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> str | None:
        value, expires = self._items.get(key, (None, 0.0))
        if value is not None and expires and expires < time.time():
            del self._items[key]
            return None
        return value

    def get(self, key: str, raise_on_error: bool = False) -> object:
        with self._lock:
            value = self._live(key)
        return None if value is None else json.loads(value)

    def set(self, key: str, value: object, serialize: bool = True, time: float = 0,
            min_compress_len: int = 0, raise_on_error: bool = False) -> None:
        expires = _now() + time if time else 0.0
        with self._lock:
            self._items[key] = (json.dumps(value), expires)

    def incr(self, key: str, delta: int = 1, time: float = 0) -> int:
        with self._lock:
            value = self._live(key)
            count = (json.loads(value) if value else 0) + delta
            self._items[key] = (json.dumps(count), _now() + time if time else 0.0)
        return count

    def decr(self, key: str, delta: int = 1, time: float = 0) -> int:
        return self.incr(key, -delta, time)

    def delete(self, key: str, server_key: str | None = None) -> None:
        with self._lock:
            self._items.pop(key, None)

    def get_multi(self, keys: list[str], server_key: str) -> list[object]:
        return [self.get(key) for key in keys]

    def set_multi(self, mapping: dict[str, object], server_key: str, serialize: bool = True,
                  time: float = 0, min_compress_len: int = 0) -> None:
        for key, value in mapping.items():
            self.set(key, value, time=time)


def _now() -> float:
    return time.time()


def memory_cache_filter(global_conf: dict, **local_conf: str) -> Callable:
    """Paste filter factory: put one _MemoryCache in every request as ``swift.cache``."""
    cache = _MemoryCache()

    def make_filter(app: Callable) -> Callable:
        def with_cache(env: dict, start_response: Callable) -> object:
            env["swift.cache"] = cache
            return app(env, start_response)

        return with_cache

    return make_filter


def _serve_swift(server: str, conf: str, object_port: str | None = None) -> None:
    """Run one swift server; the proxy first builds the rings if they are missing."""
    if object_port is not None:
        _build_rings(Path(conf).parent, int(object_port))
    sys.argv = [f"swift-{server}-server", conf, "--verbose"]
    importlib.import_module(_SWIFT_MODULES[server]).main()


def _build_rings(swift_dir: Path, object_port: int) -> None:
    """One-replica, one-device rings; container and account servers on the next ports."""
    from swift.common.ring import RingBuilder

    for offset, ring in enumerate(("object", "container", "account")):
        path = swift_dir / f"{ring}.ring.gz"
        if path.exists():
            continue
        builder = RingBuilder(part_power=6, replicas=1, min_part_hours=1)
        builder.add_dev(
            {
                "id": 0,
                "region": 1,
                "zone": 1,
                "ip": HOST,
                "port": object_port + offset,
                "device": _DEVICE,
                "weight": 1.0,
            }
        )
        builder.rebalance()
        builder.get_ring().save(str(path))


# -- smoke test ----------------------------------------------------------------


def _rss_mib(pids: dict[str, int]) -> float:
    total_kib = 0
    for pid in pids.values():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def _smoke() -> None:
    """Start a stack, exercise it the way objmount will, print what matters, stop it."""
    with tempfile.TemporaryDirectory(prefix="swift-stack-") as tmp:
        started = time.monotonic()
        with SwiftStack(tmp) as stack:
            print(
                f"started in {time.monotonic() - started:.1f} s, "
                f"servers' RSS {_rss_mib(stack.pids):.0f} MiB\n"
            )
            print(stack.rclone_conf_section("chi_tacc"))
            swift = stack.swift_connection()
            print("storage URL via catalog:", swift.get_auth()[0])
            assert swift.url == stack.storage_url

            swift.put_container("smoke")
            for name, body in (
                ("top.txt", b"top"),
                ("dir/a.txt", b"hello world"),
                ("dir/sub/b.txt", b"bb"),
            ):
                swift.put_object("smoke", name, body)
            _, listing = swift.get_container("smoke", delimiter="/")
            print("delimiter listing:", [e.get("subdir") or e["name"] for e in listing])
            assert [e.get("subdir") or e["name"] for e in listing] == ["dir/", "top.txt"]
            _, listing = swift.get_container("smoke", prefix="dir/", delimiter="/")
            assert [e.get("subdir") or e["name"] for e in listing] == ["dir/a.txt", "dir/sub/"]

            head = swift.head_object("smoke", "dir/a.txt")
            assert head["etag"] == hashlib.md5(b"hello world").hexdigest()
            assert head["content-length"] == "11"
            for byte_range, expected in (("bytes=0-4", b"hello"), ("bytes=-5", b"world")):
                response: dict[str, object] = {}
                _, body = swift.get_object(
                    "smoke", "dir/a.txt", headers={"Range": byte_range}, response_dict=response
                )
                assert (response["status"], body) == (206, expected), (response["status"], body)

            segments = [os.urandom(1024 * 1024), os.urandom(1000)]
            whole = b"".join(segments)
            swift.put_container("smoke_segments")
            manifest = []
            for i, segment in enumerate(segments):
                swift.put_object("smoke_segments", f"slo/{i:08d}", segment)
                swift.put_object("smoke_segments", f"dlo/{i:08d}", segment)
                manifest.append(
                    {
                        "path": f"/smoke_segments/slo/{i:08d}",
                        "etag": hashlib.md5(segment).hexdigest(),
                        "size_bytes": len(segment),
                    }
                )
            swift.put_object(
                "smoke",
                "large/slo.bin",
                json.dumps(manifest),
                query_string="multipart-manifest=put",
            )
            swift.put_object(
                "smoke", "large/dlo.bin", b"", headers={"X-Object-Manifest": "smoke_segments/dlo/"}
            )
            _, listing = swift.get_container("smoke", prefix="large/")
            for entry in listing:
                head = swift.head_object("smoke", entry["name"])
                _, body = swift.get_object("smoke", entry["name"])
                assert body == whole
                _, body = swift.get_object(
                    "smoke", entry["name"], headers={"Range": "bytes=1048570-1048579"}
                )
                assert body == whole[1048570:1048580]
                print(
                    f"{entry['name']}: listing bytes={entry['bytes']} "
                    f"hash={entry['hash']} content_type={entry['content_type']!r}; "
                    f"HEAD content-length={head['content-length']} etag={head['etag']}; "
                    f"real size {len(whole)}"
                )

            cred = stack.new_app_credential("smoke-extra")
            extra = stack.swift_connection(cred)
            extra.head_account()
            stack.revoke_app_credential(cred[0])
            print("connection of a revoked credential:", _works(extra.head_account))
            pids = stack.pids
        alive = [name for name, pid in pids.items() if Path(f"/proc/{pid}").exists()]
        print("stopped; servers still alive:", alive)


def _works(call: Callable[[], object]) -> str:
    try:
        call()
    except Exception as exc:  # reported, not handled
        return f"no: {exc!r}"
    return "yes"


def _main(argv: list[str]) -> None:
    if argv[:1] == ["_keystone"]:
        _die_with_parent()
        _serve_keystone(int(argv[1]))
    elif argv[:1] == ["_swift"]:
        _die_with_parent()
        _serve_swift(*argv[1:])
    else:
        _smoke()


if __name__ == "__main__":
    _main(sys.argv[1:])
