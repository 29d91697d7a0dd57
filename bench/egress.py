"""`python -m bench.egress -- COMMAND...`: every network destination a command and its children use.

Runs COMMAND under `strace -f` (connect, sendto, sendmsg), then prints each
destination address with its count and flags any outside loopback (127.0.0.0/8,
::1), Unix sockets and netlink aside. Used to check that nothing the tests and
benchmarks start (SeaweedFS, moto, Swift, Keystone, rclone, s3fs, the relay,
objmount) talks to another host: telemetry, update checks, DNS, metadata
services. Exit status 1 if any non-loopback destination was seen. Needs strace
(`apt-get install strace`).
"""

import argparse
import collections
import ipaddress
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_INET = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([0-9.]+)"\)')
_INET6 = re.compile(r'sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')


def destinations(trace: str) -> collections.Counter[tuple[str, int]]:
    """(address, port) of every connect/sendto/sendmsg in strace's output."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for line in trace.splitlines():
        for pattern in (_INET, _INET6):
            for port, addr in pattern.findall(line):
                seen[(addr, int(port))] += 1
    return seen


def is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.egress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    if shutil.which("strace") is None:
        sys.exit("bench.egress: strace missing (apt-get install strace)")
    with tempfile.TemporaryDirectory(prefix="objmount-egress-") as tmp:
        out = Path(tmp) / "trace"
        code = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg",
                               "-e", "signal=none", "-o", str(out), *command],
                              check=False).returncode
        seen = destinations(out.read_text(errors="replace"))
    foreign = {k: v for k, v in seen.items() if not is_loopback(k[0])}
    print(f"bench.egress: {sum(seen.values())} sends/connects to {len(seen)} destinations; "
          f"command exited {code}")
    for (addr, port), count in sorted(seen.items()):
        mark = "  NOT LOOPBACK" if (addr, port) in foreign else ""
        print(f"  {addr}:{port}  x{count}{mark}")
    return 1 if foreign else 0


if __name__ == "__main__":
    sys.exit(main())
