"""OpenStack Swift backend: lean GETs, python-swiftclient for the rest, one keystoneauth1 session.

How a remote authenticates is keystone.py's job; this module speaks to one
container with whatever SwiftAuth it returns.

Reads (ranged, If-Match GETs: the mount's hot path) go over one pooled urllib3
client (http_get.py): swiftclient and requests cost twice the CPU per GET
(bench/swift_gets.py measures both), and requests asks for `Accept-Encoding:
gzip, deflate`, inviting a proxy on the way to compress a body that swiftclient
then returns undecoded; these GETs ask for identity. They use
one token shared by all threads, from the keystoneauth1 session (or v1 auth,
or the pre-issued token), kept until Swift refuses it; on a 401 the token is
renewed once (by the first thread that sees the refusal) and the GET sent
again. Their errors and bytes are swiftclient's: NotFound, ETagMismatch,
AuthFailed, Unreachable, transient 5xx, a 416 read as "shrank"; and the bytes
are checked against the range asked for. Where a proxy applies to the storage
URL, reads go through swiftclient instead (it honours HTTP(S)_PROXY), checked
the same way.

Threads: a swiftclient Connection holds one HTTP connection and a token, and is
not thread-safe, so each worker thread gets its own; they share one keystoneauth
session, whose plugin fetches tokens under a lock. swiftclient's retries are off
(the runner retries), except its one re-authentication on a 401.

Tokens: a connection uses its token until Swift answers 401 (expired or
revoked); the session is then invalidated and the request sent once more with a
new token. When several threads meet the same expired token, one thread's
invalidation can make another's look pointless to swiftclient, so a 401 that
escapes swiftclient gets one more attempt here. A credential that Keystone
refuses is AuthFailed, once, with no retry: a revoked credential reads as EIO,
not a hang.

Writes (ETL only): a file above the segment size becomes a Static Large Object
whose segments, in `<container>_segments`, are uploaded by a few threads of
put_file's own: the protocol asks for parallel segments, and uploads never
serve a mount.

Listing: `delimiter` + `marker` (+ `end_marker` for a range) pages of the
cluster's container_listing_limit (GET /info; 10,000 by default); `subdir`
entries are prefixes. A zero-byte `application/directory` object (a folder made
by Horizon or `swift post`) is a directory: it is reported as the prefix
`name/`, in recursive listings too, and a marker key ending in '/' is left to
the namespace. Dynamic Large Object manifests are listed as empty objects:
see `_resolve_sizes`. Static Large Objects are listed with their real size, and
their `slo_etag` is the ETag a GET answers to, so If-Match works on both kinds.
"""

import contextlib
import hashlib
import json
import logging
import os
import threading
import urllib.parse
from calendar import timegm
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import requests
import swiftclient.client
import urllib3
from keystoneauth1 import exceptions as ksa
from keystoneauth1 import session as ksa_session
from swiftclient.exceptions import ClientException
from swiftclient.utils import LengthWrapper

from objmount import log as logsetup
from objmount.backends import Timeouts
from objmount.backends.base import (
    SEGMENT_STREAMS,
    AuthFailed,
    BackendError,
    ContainerNotFound,
    ETagMismatch,
    ListPage,
    NotFound,
    ObjectInfo,
    Retry,
    Unreachable,
    call_once,
    cut_page,
    listing_page_size_override,
)
from objmount.backends.deadline import patient
from objmount.backends.http_get import (
    PooledHTTP,
    StatusError,
    lean_get_supported,
    range_headers,
    short_reason,
    slice_answer,
)
from objmount.backends.keystone import APP_CREDENTIAL, TOKEN, SwiftAuth, swift_auth
from objmount.config import Remote

log = logging.getLogger(__name__)
T = TypeVar("T")

# Swift's default container listing limit (its cluster maximum; more answers 412):
# the page size where GET /info does not give the cluster's own. Ten times S3's
# pages, so a cold listing costs a tenth of the round trips (parsing a page of
# 10,000 costs ~17 ms of CPU). Bounded, whatever /info says, to keep a page's memory.
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 100_000
DIRECTORY_TYPE = "application/directory"
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
# Segments of a Static Large Object go to `<container>_segments`, as with rclone
# and `swift upload`, so that listings of the container show only whole objects.
SEGMENTS_SUFFIX = "_segments"
_TRANSIENT_STATUSES = frozenset({408, 429, 498, 499})


class _Connection(swiftclient.client.Connection):
    """A swiftclient Connection that gets tokens our way and registers them for redaction.

    With a session, only the token is renewed: the storage URL was resolved once
    (or given), so a catalog without this region is not looked into again.
    """

    def get_auth(self) -> tuple[str, str]:
        if self.session is not None:
            url, token = self.os_options["object_storage_url"], self.session.get_token()
        elif self.authurl:
            url, token = super().get_auth()  # v1 auth
        else:
            raise ClientException("the pre-issued token was refused", http_status=401)
        logsetup.register_secret(token)
        return url, token

    def set_read_timeout(self, read_s: float) -> None:
        """Bound the next requests' waits for a byte by `read_s` (the connect bound kept):
        swiftclient reads `timeout` when it makes its HTTP connection, which then holds it."""
        self.timeout = (self.timeout[0], read_s)
        if self.http_conn is not None:
            self.http_conn[1].requests_args["timeout"] = self.timeout


class SwiftBackend:
    """One Swift container; methods block and raise only objmount.backends.base errors."""

    def __init__(
        self,
        remote: Remote,
        container: str,
        timeouts: Timeouts,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.container = container
        self.remote_name = remote.name
        self.auth: SwiftAuth = swift_auth(remote, os.environ if env is None else env)
        self.timeouts = timeouts
        # rclone's option: trust listings, never HEAD empty objects (no DLOs in the store).
        self.no_large_objects = remote.flag("no_large_objects")
        self.session: ksa_session.Session | None = None
        if self.auth.uses_keystone:
            self.session = ksa_session.Session(auth=self.auth.plugin(), app_name="objmount")
            # Session(timeout=) takes one float, which would also bound connects by
            # the read timeout; requests takes a (connect, read) pair.
            self.session.timeout = (timeouts.connect_s, timeouts.reply_s)
        self._storage_url = self.auth.storage_url
        self._initial_token = self.auth.auth_token
        self._authenticated = False  # once a request succeeded, a refusal means revoked
        self._lock = threading.Lock()
        self._local = threading.local()
        # Bumped by a transport failure: every thread's swiftclient connection made before
        # is dropped before its next request (after an outage they are all dead).
        self._connections_made_at = 0
        # The lean GETs' pool and token (see the module docstring); None: not yet fetched.
        self.http = PooledHTTP(timeouts, "Swift", ca_certs=_ca_bundle())
        self._token: str | None = None
        self._lean_url = ""  # the storage URL that goes with _token
        self._token_lock = threading.Lock()  # apart from _lock: auth reads the catalog under it
        self._lean: bool | None = None  # None: not decided (the storage URL is not known yet)
        self._page_size: int | None = None  # asked of /info at the first listing

    def describe(self) -> str:
        """Where the container is, for messages: URLs without userinfo or query."""
        if self._storage_url:  # given, or read from the catalog by now
            return f"swift container {self.container!r} at {logsetup.redact_url(self._storage_url)}"
        region = f", region {self.auth.region}" if self.auth.region else ""
        where = logsetup.redact_url(self.auth.auth_url)
        return f"swift container {self.container!r} at {where}{region}"

    def check(self, prefix: str) -> None:
        # A HEAD, not a listing: a mount from a listing snapshot lists nothing.
        self._call(lambda c: c.head_container(self.container), key=None)

    def list_page(self, prefix: str, delimiter: str | None, token: str | None, *,
                  after: str | None = None, upto: str | None = None,
                  reverse: bool = False) -> ListPage:
        limit = self.page_size()
        # end_marker is exclusive: no name lies between upto and upto + "\x01" (Swift
        # refuses NUL in names), so this ends the range at upto, inclusive.
        end_marker = upto + "\x01" if upto is not None and not reverse else None
        _, entries = self._call(
            lambda c: c.get_container(
                self.container, prefix=prefix or None, delimiter=delimiter,
                marker=token or after, end_marker=end_marker, limit=limit,
                query_string="reverse=on" if reverse else None,
            ),
            key=None,
        )
        page = ListPage()
        for entry in entries:
            if "subdir" in entry:
                page.prefixes.append(entry["subdir"])
            elif _is_folder_object(entry):
                page.prefixes.append(entry["name"] + "/")
            else:
                page.objects.append(_info_from_listing(entry))
        page.objects = self._resolve_sizes(page.objects)
        if len(entries) == limit:
            last = entries[-1]
            page.next_token = last.get("subdir") or last["name"]
        return page if upto is None or reverse else cut_page(page, upto)

    def page_size(self) -> int:
        """Entries per listing page: the cluster's container_listing_limit from GET /info
        (asked once; Swift's default, 10,000, where /info is not served)."""
        if self._page_size is None:
            size = listing_page_size_override() or self._listing_limit()
            with self._lock:
                self._page_size = size
        return self._page_size

    def _listing_limit(self) -> int:
        """Ask the proxy's /info for container_listing_limit; DEFAULT_PAGE_SIZE if it
        does not say (404, no JSON, unreachable: the listing itself will tell)."""
        url = self._storage_url or self.auth.storage_url
        if url is None:
            with contextlib.suppress(BackendError):
                url = self._endpoint() if self.auth.uses_keystone else None
        if not url:
            return DEFAULT_PAGE_SIZE
        parts = urllib.parse.urlsplit(url)
        info_url = f"{parts.scheme}://{parts.netloc}/info"
        try:
            body = self.http.get(info_url, {"Accept": "application/json"}, "Swift /info")
            limit = json.loads(body)["swift"]["container_listing_limit"]
        except (StatusError, BackendError, ValueError, KeyError, TypeError):
            return DEFAULT_PAGE_SIZE
        if type(limit) is not int or limit < 1:
            return DEFAULT_PAGE_SIZE
        return min(limit, MAX_PAGE_SIZE)

    def container_version(self) -> str | None:
        headers = self._call(lambda c: c.head_container(self.container), key=None)
        return ",".join(f"{name}={headers.get(name, '')}" for name in
                        ("x-container-object-count", "x-container-bytes-used",
                         "x-put-timestamp"))

    def _resolve_sizes(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """HEAD each listed object that may be a Dynamic Large Object; drop vanished ones.

        Swift lists a DLO manifest as what it stores, an empty object (bytes 0,
        hash md5("")); only a HEAD gives its size and ETag. A real empty object
        looks the same, so each zero-byte md5("") entry costs one HEAD per
        listing: cheap for datasets, where empty files are rare, and cached by
        the namespace for --dir-cache-time. Sequential on purpose: this already
        runs in a runner thread, and a second thread pool would escape the
        runner's bound on requests in flight. no_large_objects skips it.
        """
        if self.no_large_objects:
            return objects
        resolved = []
        for obj in objects:
            if obj.size == 0 and obj.etag == EMPTY_MD5 and not obj.key.endswith("/"):
                try:
                    obj = self.stat(obj.key)
                except NotFound:
                    continue
            resolved.append(obj)
        return resolved

    def stat(self, key: str) -> ObjectInfo:
        return _info_from_headers(key, self._head(key))

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes | bytearray:
        # Swift answers If-Match with the ETag a HEAD shows: a plain object's MD5,
        # an SLO's slo_etag, a DLO's computed ETag (checked on 2.38).
        if end <= start:
            return b""
        if self._lean is None:
            with self._translated(f"{self.container}/{key}", key):
                self._lean = lean_get_supported(self._lean_auth()[0])
        data = (self._lean_read(key, start, end, etag) if self._lean
                else self._swiftclient_read(key, start, end, etag))
        if data is None:  # 416: the range starts past the end
            # Reads stay within the size seen at open: the object shrank since.
            if etag:
                raise ETagMismatch(
                    f"{self.container}/{key}: object changed since it was opened (it shrank)"
                )
            return b""
        return data

    def _lean_read(self, key: str, start: int, end: int, etag: str | None
                   ) -> bytes | bytearray | None:
        """One ranged GET over the pool (None for a 416); a 401 renews the token once."""
        what = f"{self.container}/{key}"
        path = f"/{quote(self.container, safe='/')}/{quote(key, safe='/')}"
        headers = range_headers(start, end, etag)
        renewed = False
        with self._translated(what, key):
            while True:
                url, token = self._lean_auth()
                try:
                    data = self.http.get_range(url + path, {"X-Auth-Token": token, **headers},
                                               start, end, etag, what)
                except StatusError as exc:
                    if exc.status == 416:
                        return None
                    if exc.status == 401 and not renewed and self._renew_lean_token(token):
                        renewed = True
                        continue
                    raise self._status_error(exc.status, exc.reason, "", what, key) from None
                self._authenticated = True
                return data

    def _swiftclient_read(self, key: str, start: int, end: int,
                          etag: str | None) -> bytes | None:
        """The same GET through swiftclient (a proxy applies), its answer checked alike."""
        what = f"{self.container}/{key}"

        def get(conn: _Connection) -> bytes | None:
            response: dict[str, Any] = {}
            try:
                # identity: requests would invite gzip, and swiftclient not decode it.
                headers = {"Accept-Encoding": "identity", **range_headers(start, end, etag)}
                _, body = conn.get_object(self.container, key, headers=headers,
                                          response_dict=response)
            except ClientException as exc:
                if exc.http_status == 416:
                    return None
                raise
            return slice_answer(response["status"], response["headers"], body, start, end,
                                etag, what)

        return self._call(get, key)

    def _lean_auth(self) -> tuple[str, str]:
        """The storage URL and the lean GETs' token: the one in use, else a new one.

        Blocks on Keystone (or v1 auth) when there is no token yet; raises
        keystoneauth1's or swiftclient's errors (translated by `_translated`).
        """
        with self._token_lock:
            if self._token is None:
                a = self.auth
                if self._initial_token is not None:
                    url = a.storage_url if not a.uses_keystone else self._endpoint()
                    if url is None:  # v1 with a token but no storage_url: auth gives the URL
                        url, _ = self._v1_auth()
                    token = self._initial_token
                elif self.session is not None:  # Keystone
                    url, token = self._endpoint(), self.session.get_token()
                else:
                    url, token = self._v1_auth()
                    url = a.storage_url or url
                logsetup.register_secret(token)
                self._token = token
                if self._storage_url is None:
                    self._storage_url = url
                self._lean_url = url
            return self._lean_url, self._token

    def _v1_auth(self) -> tuple[str, str]:
        """Swift's own v1 auth (swiftclient's): storage URL and token."""
        a = self.auth
        return swiftclient.client.get_auth(
            a.auth_url, a.params["user"], a.params["key"], auth_version="1",
            timeout=(self.timeouts.connect_s, self.timeouts.reply_s))

    def _renew_lean_token(self, refused: str) -> bool:
        """After a 401 with `refused`: make the next `_lean_auth` fetch a new token; False
        if nothing can (a pre-issued token alone). Only the first thread that sees a
        refused token renews it: the others find a new one already."""
        if self.auth.method == TOKEN:
            return False
        with self._token_lock:
            if self._token == refused:
                self._token = None
                self._initial_token = None  # a refused pre-issued token is not worth retrying
                if self.session is not None:
                    self.session.invalidate()
        return True

    # Writes: used by `objmount etl load`, never by a mount.

    def create_container(self) -> None:
        self._call(lambda c: c.put_container(self.container), key=None)

    def put_file(self, key: str, path: Path, segment_size: int, *, md5: str | None = None,
                 absent: bool = False, retry: Retry = call_once) -> None:
        size = path.stat().st_size
        # A listed-absent key has no old segments to find: no HEAD (one RTT per file).
        old_segments = [] if absent else retry(lambda: self._slo_segments(key))
        if size <= segment_size:
            retry(lambda: self._put_part(self.container, key, path, 0, size))
        else:
            self._put_slo(key, path, size, segment_size, retry)
        for segment in old_segments:
            self._delete_segment(segment)

    def delete(self, key: str) -> None:
        # An SLO's segments go too; a DLO's segments are not its own. Not Swift's
        # `multipart-manifest=delete`: on a plain object it answers 200 and deletes nothing.
        segments = self._slo_segments(key)
        with contextlib.suppress(NotFound):
            self._call(lambda c: c.delete_object(self.container, key), key)
        for segment in segments:
            self._delete_segment(segment)

    def _delete_segment(self, path: str) -> None:
        """Delete a segment named `/container/key`; no error if it is missing."""
        container, _, key = path.lstrip("/").partition("/")
        with contextlib.suppress(NotFound):
            self._call(lambda c: c.delete_object(container, key), key, what=path)

    def _put_slo(self, key: str, path: Path, size: int, segment_size: int,
                 retry: Retry) -> None:
        """Upload `path` as segments, SEGMENT_STREAMS at a time, then its SLO manifest;
        each request through `retry`.

        On the first lasting failure the remaining segments are cancelled and those
        uploaded are deleted (best effort), as S3 aborts a multipart upload.
        """
        segments = self.container + SEGMENTS_SUFFIX
        retry(lambda: self._call(lambda c: c.put_container(segments), key=None))
        # `swift upload`'s naming: a new upload never overwrites a live segment.
        stem = f"{key}/slo/{path.stat().st_mtime:.6f}/{size}/{segment_size}"
        offsets = range(0, size, segment_size)
        uploaded: list[str] = []

        def upload(index: int) -> dict[str, object]:
            name = f"{stem}/{index:08d}"
            length = min(segment_size, size - offsets[index])
            etag = retry(lambda: self._put_part(segments, name, path, offsets[index], length))
            uploaded.append(f"/{segments}/{name}")
            return {"path": f"/{segments}/{name}", "etag": etag, "size_bytes": length}

        pool = ThreadPoolExecutor(min(SEGMENT_STREAMS, len(offsets)), "swift-segment")
        try:
            futures = [pool.submit(upload, index) for index in range(len(offsets))]
            manifest = [future.result() for future in futures]
            body = json.dumps(manifest)
            retry(lambda: self._call(
                lambda c: c.put_object(self.container, key, body,
                                       query_string="multipart-manifest=put"),
                key,
            ))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            for segment in uploaded:
                with contextlib.suppress(BackendError):
                    self._delete_segment(segment)
            raise
        finally:
            pool.shutdown(cancel_futures=True)

    def _put_part(self, container: str, key: str, path: Path, offset: int, length: int) -> str:
        """PUT `length` bytes of `path` from `offset`; returns their MD5, checked by Swift."""

        with path.open("rb") as f:  # a local error is an OSError, not the store's

            def put(conn: _Connection) -> str:
                f.seek(offset)  # again on the attempt with a new token
                data = LengthWrapper(f, length, md5=True)
                etag = conn.put_object(container, key, data, content_length=length)
                if etag and etag.strip('"') != data.get_md5sum():
                    raise BackendError(f"{container}/{key}: upload corrupted (MD5 differs)",
                                       transient=True)
                return data.get_md5sum()

            return self._call(put, key, what=f"{container}/{key}")

    def _slo_segments(self, key: str) -> list[str]:
        """Paths of the segments of `key` if it is a Static Large Object, else []."""
        try:
            headers = self._head(key)
        except NotFound:
            return []
        if headers.get("x-static-large-object", "").lower() != "true":
            return []
        _, body = self._call(
            lambda c: c.get_object(self.container, key, query_string="multipart-manifest=get"),
            key,
        )
        return [segment["name"] for segment in json.loads(body)]

    def _head(self, key: str) -> dict[str, str]:
        """Return the headers of a HEAD on `key` (lower-case names); raises NotFound."""
        return self._call(lambda c: c.head_object(self.container, key), key)

    # Requests, tokens and errors.

    def _connection(self) -> _Connection:
        """This thread's connection, made on first use (the catalog is read once), and
        again after a transport failure of any thread."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.made_at != self._connections_made_at:
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if conn is None:
            self._local.made_at = self._connections_made_at
            conn = self._local.conn = self._new_connection()
        return conn

    def _discard_connections(self) -> None:
        """After a transport failure: every idle connection to the store or Keystone goes
        (see http_get.py for why)."""
        self._local.conn = None
        self._connections_made_at += 1
        if self.session is not None:
            self.session.session.close()  # its pool to Keystone; made again on demand

    def _new_connection(self) -> _Connection:
        a = self.auth
        common: dict[str, Any] = {
            "retries": 0,
            "starting_backoff": 0,  # swiftclient sleeps this long before re-authenticating
            "retry_on_ratelimit": False,
            "timeout": (self.timeouts.connect_s, self.timeouts.idle_s),
            "preauthtoken": self._initial_token,
        }
        if a.method == TOKEN:
            return _Connection(preauthurl=a.storage_url, **common)
        if not a.uses_keystone:  # v1: swiftclient's own auth, which gives the storage URL
            return _Connection(authurl=a.auth_url, user=a.params["user"], key=a.params["key"],
                               auth_version="1", preauthurl=a.storage_url, **common)
        return _Connection(session=self.session, preauthurl=self._endpoint(), **common)

    def _endpoint(self) -> str:
        """The object-store URL: storage_url if given, else the catalog's (read once)."""
        with self._lock:
            if self._storage_url is None:
                self._storage_url = self._catalog_url()
            return self._storage_url

    def _catalog_url(self) -> str:
        assert self.session is not None
        a = self.auth
        try:
            url = self.session.get_endpoint(
                service_type="object-store", interface=a.interface, region_name=a.region
            )
        except ksa.EndpointNotFound:
            url = None
        logsetup.register_secret(self.session.get_token())  # obtained on the way
        if url:
            return url
        access = self.session.auth.get_access(self.session)
        found = access.service_catalog.get_endpoints(service_type="object-store")
        endpoints = found.get("object-store", [])
        if not endpoints:
            raise BackendError(
                f"the service catalog of {a.who} at {a.auth_url} has no object-store "
                "(Swift) endpoint: this cloud has no Swift for that project, or set storage_url"
            )
        interfaces: dict[str, set[str]] = {}
        for endpoint in endpoints:
            region = endpoint.get("region") or endpoint.get("region_id") or "no region"
            interfaces.setdefault(region, set()).add(endpoint["interface"])
        offered = "; ".join(f"{region} ({', '.join(sorted(kinds))})"
                            for region, kinds in sorted(interfaces.items()))
        where = f"region {a.region!r}" if a.region else "any region"
        raise BackendError(
            f"no {a.interface} object-store endpoint in {where} of the catalog at "
            f"{a.auth_url}; it has: {offered} (set region, endpoint_type)"
        )

    def _forget_token(self, conn: _Connection) -> bool:
        """Make `conn` get a new token on its next request; False if it cannot."""
        if self.auth.method == TOKEN:
            return False
        self._initial_token = None  # a refused pre-issued token is not worth trying again
        conn.token = None
        conn.url = None
        return True

    def _call(
        self, op: Callable[[_Connection], T], key: str | None, what: str | None = None
    ) -> T:
        """Run one request on this thread's connection, translating every error.

        `key` is None for container requests. A 401 gets one more attempt with a
        new token (see the module docstring).
        """
        if what is None:
            what = f"{self.container}/{key}" if key is not None else self.describe()
        renewed = False
        while True:
            with self._translated(what, key):
                conn = self._connection()
                # requests has one read timeout, for the first byte and every gap: a
                # retry's is the longer wait for a first byte (Timeouts.head_s), as on
                # the lean path; these are listings and HEADs, their bodies small.
                conn.set_read_timeout(self.timeouts.head_s(patient()))
                try:
                    result = op(conn)
                except ClientException as exc:
                    if exc.http_status == 401 and not renewed and self._forget_token(conn):
                        renewed = True
                        continue
                    raise
                self._authenticated = True
                if self._storage_url is None:  # v1 auth: the URL comes with the token
                    self._storage_url = conn.url
                return result

    @contextlib.contextmanager
    def _translated(self, what: str, key: str | None) -> Iterator[None]:
        """Raise swiftclient's, keystoneauth1's, requests' and socket errors as ours.

        `key` is None for container requests. A failed connection is dropped: its
        HTTP connection may be half-used.
        """
        try:
            yield
        except ClientException as exc:
            raise self._status_error(exc.http_status, exc.http_reason, str(exc.msg), what,
                                     key) from None
        except ksa.ClientException as exc:
            if isinstance(exc, ksa.ConnectionError):  # refused, reset, timed out
                self._discard_connections()
            raise self._translate_keystone(exc) from None
        except requests.exceptions.RequestException as exc:
            self._discard_connections()
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                raise Unreachable(f"cannot reach Swift at {self._where()}: no answer to "
                                  f"connect within {self.timeouts.connect_s:g}s") from None
            if isinstance(exc, requests.exceptions.ConnectionError) and _no_connection(exc):
                raise Unreachable(f"cannot reach Swift at {self._where()}: "
                                  f"{short_reason(exc)}") from None
            raise BackendError(f"{what}: {short_reason(exc)}", transient=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._discard_connections()
            raise BackendError(f"{what}: {short_reason(exc)}", transient=True) from None

    def _where(self) -> str:
        return self._storage_url or self.auth.storage_url or self.auth.auth_url

    def _status_error(self, status: int | None, reason: str | None, msg: str, what: str,
                      key: str | None) -> BackendError:
        """The error of a Swift answer with `status` (None: swiftclient failed otherwise)."""
        error: BackendError
        if status == 404 and key is None:
            error = ContainerNotFound(
                f"container {self.container!r} does not exist at {self._where()}"
            )
        elif status == 404:
            error = NotFound(f"{what}: no such object")
        elif status == 412:
            error = ETagMismatch(f"{what}: object changed since it was opened (ETag differs)")
        elif status == 401 and msg.startswith("Auth GET failed"):  # v1 auth
            error = AuthFailed(f"{self.auth.auth_url} refused {self.auth.who}: check the "
                               f"{self.auth.hint} of remote {self.remote_name!r}")
        elif status == 401:
            error = AuthFailed(self._refused_message())
        elif status == 403:
            error = AuthFailed(
                f"access denied to {self.describe()} for {self.auth.who}: its project has "
                "no role that allows this (Swift answered 403)"
            )
        elif status is None:
            error = BackendError(f"{what}: {msg}")
        else:
            transient = status >= 500 or status in _TRANSIENT_STATUSES
            error = BackendError(f"{what}: HTTP {status} {reason or ''}".rstrip(),
                                 transient=transient)
        return error

    def _refused_message(self) -> str:
        a = self.auth
        if a.method == TOKEN:
            return (f"Swift refused the pre-issued auth_token of remote {self.remote_name!r} "
                    "(expired or revoked): get a new one, or configure credentials")
        return (f"Swift refused the token of {a.who} for {self.describe()} even after "
                f"re-authenticating: check the {a.hint} of remote {self.remote_name!r}")

    def _translate_keystone(self, exc: ksa.ClientException) -> BackendError:
        """Errors of Keystone itself: authentication, catalog, connection."""
        a = self.auth
        remote = f"remote {self.remote_name!r}"
        if isinstance(exc, ksa.ConnectTimeout):  # keystoneauth's name for any timeout
            return Unreachable(f"cannot reach Keystone at {a.auth_url}: timed out (connect "
                               f"{self.timeouts.connect_s:g}s, reply {self.timeouts.reply_s:g}s)")
        if isinstance(exc, ksa.ConnectionError):
            return Unreachable(f"cannot reach Keystone at {a.auth_url}: {short_reason(exc)}")
        if isinstance(exc, ksa.Unauthorized):
            if self._authenticated:
                return AuthFailed(f"Keystone at {a.auth_url} no longer accepts {a.who} (revoked, "
                                  f"expired or changed?): check the {a.hint} of {remote}")
            return AuthFailed(f"Keystone at {a.auth_url} refused {a.who}: check the {a.hint} "
                              f"of {remote}")
        if isinstance(exc, ksa.NotFound):
            if a.method == APP_CREDENTIAL and self._authenticated:
                return AuthFailed(f"Keystone at {a.auth_url} no longer knows {a.who}: it was "
                                  f"deleted, revoked or has expired (remote {self.remote_name!r})")
            if a.method == APP_CREDENTIAL:
                return AuthFailed(
                    f"Keystone at {a.auth_url} does not know {a.who} (deleted, revoked or "
                    f"expired?) or the auth URL is wrong: check {remote}"
                )
            return AuthFailed(f"Keystone at {a.auth_url} answered 404 for {a.who}: is the "
                              f"auth URL of {remote} right?")
        if isinstance(exc, ksa.Forbidden):
            return AuthFailed(f"Keystone at {a.auth_url} forbids {a.who} this project: check "
                              f"the tenant / tenant_id of {remote}")
        if isinstance(exc, ksa.HttpServerError):
            return BackendError(f"Keystone at {a.auth_url} failed: HTTP {exc.http_status}",
                                transient=True)
        if isinstance(exc, ksa.HttpError):
            return BackendError(f"Keystone at {a.auth_url} refused the request for {a.who}: "
                                f"HTTP {exc.http_status} {exc.message}")
        return BackendError(f"Keystone at {a.auth_url}: {short_reason(exc)}")


def _is_folder_object(entry: Mapping[str, Any]) -> bool:
    """A zero-byte application/directory object without a trailing '/': a folder."""
    content_type = str(entry.get("content_type", "")).split(";")[0].strip().lower()
    name = entry["name"]
    return content_type == DIRECTORY_TYPE and entry.get("bytes") == 0 and not name.endswith("/")


def _info_from_listing(entry: Mapping[str, Any]) -> ObjectInfo:
    etag = entry.get("slo_etag") or entry.get("hash", "")
    return ObjectInfo(
        key=entry["name"],
        size=int(entry.get("bytes", 0)),
        etag=etag.strip('"'),
        mtime_ns=_listing_time_ns(entry.get("last_modified", "")),
    )


def _info_from_headers(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(headers.get("content-length", 0)),
        etag=headers.get("etag", "").strip('"'),
        mtime_ns=_header_time_ns(headers),
    )


def _listing_time_ns(text: str) -> int:
    """Listings give UTC without a zone, to the microsecond: 2026-11-23T17:46:28.211390."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return 0
    return timegm(moment.timetuple()) * 1_000_000_000 + moment.microsecond * 1000


def _header_time_ns(headers: Mapping[str, str]) -> int:
    """X-Timestamp (the listing's time, exactly); else Last-Modified, rounded up to a second."""
    try:
        return int(Decimal(headers["x-timestamp"]) * 1_000_000_000)
    except (KeyError, InvalidOperation):
        pass
    try:
        return int(parsedate_to_datetime(headers["last-modified"]).timestamp()) * 1_000_000_000
    except (KeyError, TypeError, ValueError):
        return 0


def _no_connection(exc: Exception) -> bool:
    """True if no connection was made (as opposed to one that broke mid-request)."""
    return "Failed to establish a new connection" in str(exc) or "NameResolution" in str(exc)


def _ca_bundle() -> str:
    """The CA certificates requests (so swiftclient) would verify with: its environment
    variables, else certifi's bundle."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.certs.where())
