"""Unpacking refuses any archive member that would land outside the staging directory."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from objmount.errors import EtlError
from objmount.etl.extract import archive_name, unpack
from objmount.etl.staging import DOWNLOAD_DIR


def zip_of(archive: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None
           ) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return archive


def tar_of(archive: Path, members: dict[str, bytes],
           links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return archive


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A staging directory inside `outside`, and `outside` itself to watch."""
    outside = tmp_path / "outside"
    staging = outside / "staging"
    staging.mkdir(parents=True)
    return staging, outside


def everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_safe_zip_unpacks_every_file(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    archive = zip_of(outside / "ok.zip", {"training/0_1.jpg": b"a", "evaluation/1_2.jpg": b"bb"})
    assert unpack(archive, staging) == 2
    assert (staging / "evaluation/1_2.jpg").read_bytes() == b"bb"


def test_a_safe_tar_gz_unpacks_every_file_and_inside_links(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    archive = tar_of(outside / "ok.tar.gz", {"a/x.txt": b"x"},
                     {"a/link": (tarfile.SYMTYPE, "x.txt")})
    assert unpack(archive, staging) == 1
    assert (staging / "a/link").read_bytes() == b"x"


ZIP_ESCAPES = {
    "dot-dot": ({"../escaped.txt": b"evil"}, {}),
    "nested dot-dot": ({"ok.txt": b"fine", "a/../../escaped.txt": b"evil"}, {}),
    "absolute": ({"/tmp/escaped.txt": b"evil"}, {}),
    "symlink out": ({}, {"link": "../../escaped.txt"}),
    "absolute symlink": ({}, {"link": "/etc/passwd"}),
}


@pytest.mark.parametrize("case", sorted(ZIP_ESCAPES))
def test_an_escaping_zip_is_refused_and_nothing_is_written(
    dirs: tuple[Path, Path], case: str
) -> None:
    staging, outside = dirs
    members, symlinks = ZIP_ESCAPES[case]
    archive = zip_of(outside / "evil.zip", members, symlinks)
    before = everything(outside)
    with pytest.raises(EtlError, match=r"refused to unpack evil\.zip: member .* nothing was"):
        unpack(archive, staging)
    assert everything(outside) == before
    assert not os.listdir(staging)


TAR_ESCAPES = {
    "dot-dot": ({"../escaped.txt": b"evil"}, {}),
    "absolute": ({"/tmp/escaped.txt": b"evil"}, {}),
    "symlink out": ({}, {"link": (tarfile.SYMTYPE, "../../escaped.txt")}),
    "absolute symlink": ({}, {"link": (tarfile.SYMTYPE, "/etc/passwd")}),
    "hardlink out": ({}, {"link": (tarfile.LNKTYPE, "../escaped.txt")}),
    "device": ({}, {"dev": (tarfile.CHRTYPE, "")}),
}


@pytest.mark.parametrize("case", sorted(TAR_ESCAPES))
def test_an_escaping_tar_is_refused_and_nothing_is_written(
    dirs: tuple[Path, Path], case: str
) -> None:
    staging, outside = dirs
    members, links = TAR_ESCAPES[case]
    archive = tar_of(outside / "evil.tar.gz", {"first.txt": b"ok", **members}, links)
    before = everything(outside)
    with pytest.raises(EtlError, match=r"refused to unpack evil\.tar\.gz"):
        unpack(archive, staging)
    assert everything(outside) == before
    assert not os.listdir(staging)


def test_a_member_through_an_existing_symlink_out_is_refused(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    (outside / "elsewhere").mkdir()
    (staging / "training").symlink_to(outside / "elsewhere")
    archive = zip_of(outside / "evil.zip", {"training/0_1.jpg": b"evil"})
    with pytest.raises(EtlError, match="outside"):
        unpack(archive, staging)
    assert not os.listdir(outside / "elsewhere")


def test_a_file_that_is_no_archive_is_a_clear_error(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    (outside / "page.html").write_text("<html>Sign in</html>")
    with pytest.raises(EtlError, match="neither a zip nor a tar"):
        unpack(outside / "page.html", staging)


@pytest.mark.parametrize(("url", "name"), [
    ("https://host/shared/static/abc.zip", "abc.zip"),
    ("https://host/data.tar.gz?token=1", "data.tar.gz"),
    ("https://host/", "download"),
    ("https://host/a/..", "download"),
])
def test_the_download_is_named_after_the_url_path(url: str, name: str) -> None:
    assert archive_name(url) == name


def zip_with_modes(archive: Path, modes: dict[str, int], system: int = 3) -> Path:
    """A zip whose members carry these Unix modes (as `zip` on Unix records them)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for name, mode in modes.items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = system, (stat.S_IFREG | mode) << 16
            zf.writestr(info, name.encode())
    return archive


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


ZIP_MODES = {  # as in the archive -> as unpacked (the rule of tar's "data" filter)
    "private": (0o600, 0o600),
    "readable": (0o644, 0o644),
    "executable": (0o755, 0o755),
    "owner read-only": (0o400, 0o600),
    "group and world writable": (0o666, 0o644),
    "world writable executable": (0o777, 0o755),
    "setuid": (0o4755, 0o755),
    "setgid and sticky": (0o3750, 0o750),
    "exec for others only": (0o601, 0o600),
}


def test_zip_members_keep_their_modes_but_never_dangerous_bits(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    archive = zip_with_modes(outside / "modes.zip", {name: m for name, (m, _) in ZIP_MODES.items()})
    assert unpack(archive, staging) == len(ZIP_MODES)
    assert {name: mode(staging / name) for name in ZIP_MODES} == {
        name: unpacked for name, (_, unpacked) in ZIP_MODES.items()}


def test_a_zip_made_on_windows_gets_the_default_mode(dirs: tuple[Path, Path]) -> None:
    staging, outside = dirs
    unpack(zip_with_modes(outside / "dos.zip", {"a.txt": 0o777}, system=0), staging)
    umask = os.umask(0)
    os.umask(umask)
    assert mode(staging / "a.txt") == 0o666 & ~umask


DOWNLOAD_DIR_MEMBERS = {
    "zip member": lambda a: zip_of(a, {"ok.txt": b"x", f"{DOWNLOAD_DIR}/data.zip": b"evil"}),
    "zip member with ./": lambda a: zip_of(a, {f"./{DOWNLOAD_DIR}/data.zip": b"evil"}),
    "zip file named like it": lambda a: zip_of(a, {DOWNLOAD_DIR: b"evil"}),
    "tar member": lambda a: tar_of(a, {f"{DOWNLOAD_DIR}/data.zip": b"evil"}),
    "tar symlink to it": lambda a: tar_of(a, {}, {"in": (tarfile.SYMTYPE, DOWNLOAD_DIR)}),
    "tar hardlink into it": lambda a: tar_of(
        a, {}, {"copy": (tarfile.LNKTYPE, f"{DOWNLOAD_DIR}/data.zip")}),
}


@pytest.mark.parametrize("case", sorted(DOWNLOAD_DIR_MEMBERS))
def test_a_member_in_the_download_directory_refuses_the_archive(
    dirs: tuple[Path, Path], case: str
) -> None:
    staging, outside = dirs
    (staging / DOWNLOAD_DIR).mkdir()
    (staging / DOWNLOAD_DIR / "data.zip").write_bytes(b"the archive")
    archive = DOWNLOAD_DIR_MEMBERS[case](outside / "data.zip")
    with pytest.raises(EtlError, match=rf"uses {DOWNLOAD_DIR}/, where objmount downloads; "
                                       "nothing was extracted"):
        unpack(archive, staging)
    assert everything(staging) == {DOWNLOAD_DIR, f"{DOWNLOAD_DIR}/data.zip"}
    assert (staging / DOWNLOAD_DIR / "data.zip").read_bytes() == b"the archive"


def test_a_tar_reaching_the_download_directory_through_its_own_link_is_stopped_there(
    dirs: tuple[Path, Path]
) -> None:
    staging, outside = dirs
    (staging / DOWNLOAD_DIR).mkdir()
    with tarfile.open(outside / "chain.tar", "w") as tf:
        link = tarfile.TarInfo("here")
        link.type, link.linkname = tarfile.SYMTYPE, "."
        tf.addfile(link)
        member = tarfile.TarInfo(f"here/{DOWNLOAD_DIR}/data.zip")
        member.size = 4
        tf.addfile(member, io.BytesIO(b"evil"))
    with pytest.raises(EtlError, match=rf"member 'here/{DOWNLOAD_DIR}/data.zip' uses "
                                       ".* the members before it are unpacked"):
        unpack(outside / "chain.tar", staging)
    assert not (staging / DOWNLOAD_DIR / "data.zip").exists()
