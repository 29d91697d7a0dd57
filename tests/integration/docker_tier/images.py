"""The Docker tier's images: a local base, objmount's own image, and a Jupyter stand-in.

No registry is reachable from the test machines, so `FROM python:3.11-slim` cannot
be pulled. The base is made from Debian's packages by base-rootfs.sh (mmdebstrap) and
`docker import`ed; its tarball is cached in CACHE_DIR, keyed by a hash of what makes
it (the script, the machine's local CAs, the mirror), so only a first run or a
changed recipe pays for it. objmount's image is built from docker/Dockerfile over
that base on every run: it is what the tier tests. The Jupyter stand-in
(jupyter.Dockerfile) only installs packages from PyPI; it is `docker save`d into
the cache after its first build and loaded afterwards.
"""

import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers.docker_engine import DockerEngine

HERE = Path(__file__).parent
REPO = HERE.parents[2]
CACHE_DIR = Path(os.environ.get("OBJMOUNT_TEST_CACHE") or Path.home() / ".cache/objmount-test")
BASE_SCRIPT = HERE / "base-rootfs.sh"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
BASE_TAG = "objmount-test-base:latest"
OBJMOUNT_TAG = "objmount:latest"  # what docker/docker-compose-etl.yaml runs
JUPYTER_TAG = "objmount-test-jupyter:latest"
BASE_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_BUILD_TIMEOUT_S = 900


def base_key() -> str:
    """Hash of everything the base tarball is made from."""
    digest = hashlib.sha256(BASE_SCRIPT.read_bytes())
    digest.update(os.environ.get("OBJMOUNT_DEBIAN_MIRROR", "").encode())
    for ca in sorted(LOCAL_CAS.glob("*.crt")):
        digest.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return digest.hexdigest()[:16]


@contextmanager
def cached(name: str, key: str) -> Iterator[tuple[Path, bool]]:
    """Yield CACHE_DIR's file for `name` at `key`, and whether it is there already.

    Runs at once wait for one another here; the files of other keys are deleted.
    The caller writes a missing file to its path + ".partial" and renames it.
    """
    CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = CACHE_DIR / f"docker-{name}-{key}.tar.gz"
    with open(CACHE_DIR / f"docker-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            for old in CACHE_DIR.glob(f"docker-{name}-*.tar.gz*"):
                old.unlink()
        yield path, path.exists()


def import_base(engine: DockerEngine) -> str:
    """Import the base into `engine`, making its root filesystem first if it is not cached
    (about two minutes); return its tag."""
    with cached("base", base_key()) as (tarball, found):
        if not found:
            result = subprocess.run(["bash", str(BASE_SCRIPT), str(tarball)], capture_output=True,
                                    text=True, timeout=BASE_BUILD_TIMEOUT_S, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"base-rootfs.sh exited {result.returncode}:\n{result.stderr}")
        engine.docker("import", "--change", f"ENV PATH={BASE_PATH}", str(tarball), BASE_TAG)
    return BASE_TAG


def build(engine: DockerEngine, dockerfile: Path, context: Path, tag: str, base: str) -> str:
    """Build `dockerfile` over `base` with the classic builder; return `tag`.

    `--network host`: the engine has no bridge, and RUN steps reach Debian and PyPI.
    """
    engine.docker("build", "--quiet", "--network", "host", "--build-arg", f"BASE={base}",
                  "-f", str(dockerfile), "-t", tag, str(context), env={"DOCKER_BUILDKIT": "0"})
    return tag


def build_cached(engine: DockerEngine, dockerfile: Path, tag: str, base: str) -> str:
    """`build` a Dockerfile that copies nothing in, or `docker load` it from the cache.

    Keyed by the Dockerfile and the base; a new build is `docker save`d for next time.
    """
    key = hashlib.sha256(dockerfile.read_bytes() + base_key().encode()).hexdigest()[:16]
    with cached(dockerfile.stem, key) as (saved, found):
        if found:
            engine.docker("load", "--quiet", "--input", str(saved))
            return tag
        build(engine, dockerfile, dockerfile.parent, tag, base)
        partial = saved.with_name(saved.name + ".partial")
        with open(partial, "wb") as out:
            save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE,
                                    env=engine.env)
            subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=out, check=True)
            save.stdout.close()
            if save.wait() != 0:
                raise RuntimeError(f"docker save {tag} exited {save.returncode}")
        partial.rename(saved)
    return tag
