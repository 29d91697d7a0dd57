"""`python -m bench.gets`: GETs/s and client CPU per GET, boto3 get_object vs the lean path.

Issue #5 measured boto3's get_object at ~2 ms CPU per request, capping small
reads near 430 GETs/s with 8 threads on 2 cores. This micro-benchmark runs the
same ranged, conditional GETs (Range + If-Match, as objmount's read path sends
them) through boto3 (configured as S3Backend configures it) and through
objmount.backends.s3_get (botocore's signer over urllib3), 8 threads, against
SeaweedFS on 127.0.0.1, directly or behind the latency relay (--rtt-ms).
First it checks that both paths return the same bytes and raise the same
errors (odd keys, a missing key, a changed ETag, a wrong secret).
"""

import argparse
import contextlib
import hashlib
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions

from bench.mounts import Tools
from bench.relay import start_relay
from bench.servers import REGION, SeaweedS3
from objmount.backends import Timeouts
from objmount.backends.s3 import S3Backend
from objmount.backends.s3_get import S3Getter
from objmount.config import Remote

BUCKET = "gets"
ODD_KEYS = ["a b/c+d.jpg", "ünï/cödé.bin", "x/../y.bin", "p%20q/r~s.bin", "dir//twice.bin"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, get: Callable[[str, int, int, str], bytes],
            objects: list[tuple[str, int, str, str]], threads: int) -> dict[str, float]:
    """Run every (key, size, etag, sha256) through `get` on `threads` threads."""
    def one(obj: tuple[str, int, str, str]) -> int:
        key, size, etag, digest = obj
        data = get(key, 0, size, etag)
        return int(hashlib.sha256(data).hexdigest() != digest)

    cpu0, wall0 = _cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        bad = sum(pool.map(one, objects))
    wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    nbytes = sum(o[1] for o in objects)
    result = {"gets_per_s": len(objects) / wall, "cpu_ms_per_get": cpu / len(objects) * 1e3,
              "mb_per_s": nbytes / wall / 1e6, "bad": bad}
    print(f"  {name:<22} {result['gets_per_s']:8,.0f} GETs/s  {result['mb_per_s']:7,.1f} MB/s  "
          f"{result['cpu_ms_per_get']:6.2f} ms CPU/GET  bad {bad}", flush=True)
    return result


def _errors_of(fn: Callable[[], object]) -> str:
    try:
        fn()
    except botocore.exceptions.ClientError as exc:
        return f"ClientError {exc.response['Error']['Code']} {exc.response['ResponseMetadata']}"
    except botocore.exceptions.BotoCoreError as exc:
        return type(exc).__name__
    return "ok"


def check_same(backend: S3Backend, lean: S3Getter, wrong: S3Getter, client) -> None:
    """Both paths return the same bytes and translate to the same errors; raise if not."""
    boto = backend.client
    for key in ODD_KEYS:
        body = hashlib.sha256(key.encode()).digest() * 100
        try:
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        except botocore.exceptions.ClientError as exc:
            print(f"  key {key!r} refused by the server ({exc.response['Error']['Code']}): skipped")
            continue
        etag = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        a = boto.get_object(Bucket=BUCKET, Key=key, Range="bytes=5-1004")["Body"].read()
        b = lean.get(key, 5, 1005, etag)
        assert a == b == body[5:1005], f"bytes differ for {key!r}"
    key = ODD_KEYS[0]
    cases = {
        "missing key": (lambda: boto.get_object(Bucket=BUCKET, Key="nope", Range="bytes=0-9"),
                        lambda: lean.get("nope", 0, 10, None)),
        "changed ETag": (lambda: boto.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-9",
                                                 IfMatch='"0123"'),
                         lambda: lean.get(key, 0, 10, "0123")),
        "wrong secret": (None, lambda: wrong.get(key, 0, 10, None)),
    }
    for what, (via_boto, via_lean) in cases.items():
        lean_error = _errors_of(via_lean)
        boto_error = _errors_of(via_boto) if via_boto else "(boto3 not run)"
        print(f"  {what:<13} boto3: {boto_error[:60]:<60} lean: {lean_error[:60]}")
        if via_boto:
            assert boto_error.split()[:2] == lean_error.split()[:2], what
    # Same translation: S3Backend._call turns both into the same objmount error.
    for what, (_, via_lean) in cases.items():
        try:
            backend._call(via_lean, key)
        except Exception as exc:
            print(f"  {what:<13} objmount: {type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gets",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2000, help="small objects (60-120 KiB)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="0: no relay")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path")
    args = parser.parse_args()
    tools = Tools.find()
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="objmount-gets-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        server = SeaweedS3(tools.weed, tmp / "weed", tmp)
        cleanup.callback(server.stop)
        server.start()
        endpoint = server.endpoint
        if args.rtt_ms:
            relay = start_relay(server.port, args.rtt_ms)
            cleanup.callback(relay.stop)
            endpoint = f"http://127.0.0.1:{relay.port}"
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        rng = random.Random("objmount-bench-gets")
        objects = []

        def put(i: int) -> tuple[str, int, str, str]:
            body = random.Random(i).randbytes(rng.randint(60 << 10, 120 << 10))
            key = f"small/img_{i:05d}.jpg"
            etag = client.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
            return key, len(body), etag, hashlib.sha256(body).hexdigest()

        with ThreadPoolExecutor(8) as pool:
            objects = list(pool.map(put, range(args.objects)))
        big = random.Random(-1).randbytes(64 << 20)
        big_etag = client.put_object(Bucket=BUCKET, Key="big.bin", Body=big)["ETag"].strip('"')
        blocks = [(off, off + (8 << 20)) for off in range(0, 64 << 20, 8 << 20)] * 4

        remote = Remote("gets", "s3", {"access_key_id": server.access_key,
                                       "secret_access_key": server.secret_key,
                                       "endpoint": endpoint, "region": REGION})
        timeouts = Timeouts(pool_size=max(16, args.threads))
        backend = S3Backend(remote, BUCKET, timeouts)
        credentials = backend.client._request_signer._credentials
        lean = S3Getter(endpoint, BUCKET, REGION, credentials, timeouts, path_style=True)
        wrong_remote = Remote("gets", "s3", {**remote.options, "secret_access_key": "wrong"})
        wrong = S3Getter(endpoint, BUCKET, REGION,
                         S3Backend(wrong_remote, BUCKET, timeouts).client._request_signer
                         ._credentials, timeouts, path_style=True)
        print(f"bench.gets: {args.objects} objects of 60-120 KiB, {args.threads} threads, "
              f"RTT {args.rtt_ms:g} ms; checking both paths agree", flush=True)
        check_same(backend, lean, wrong, client)

        def boto3_get(key: str, start: int, end: int, etag: str) -> bytes:
            return backend.client.get_object(
                Bucket=BUCKET, Key=key, Range=f"bytes={start}-{end - 1}",
                IfMatch=f'"{etag}"')["Body"].read()

        paths = {"boto3 get_object": boto3_get, "lean (signer+urllib3)": lean.get,
                 "S3Backend.read": backend.read}
        for round_no in range(args.rounds):
            print(f" round {round_no + 1}: small objects", flush=True)
            for name, get in paths.items():
                measure(name, get, objects, args.threads)
        print(" 8 MiB ranged GETs of one 64 MiB object (block fetches)", flush=True)
        for name, get in paths.items():
            started = time.perf_counter()
            cpu0 = _cpu_s()
            with ThreadPoolExecutor(args.threads) as pool:
                datas = list(pool.map(
                    lambda b, get=get: get("big.bin", b[0], b[1], big_etag), blocks))
            wall, cpu = time.perf_counter() - started, _cpu_s() - cpu0
            assert all(d == big[b[0]:b[1]] for d, b in zip(datas, blocks, strict=True))
            nbytes = sum(b[1] - b[0] for b in blocks)
            print(f"  {name:<22} {nbytes / wall / 1e6:8,.0f} MB/s  "
                  f"{cpu / (nbytes / 1e9):6.2f} CPU s/GB", flush=True)


if __name__ == "__main__":
    main()
