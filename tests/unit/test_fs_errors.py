"""Every exception from a handler becomes an errno; none escapes to end the mount."""

import errno

import pyfuse3

from objmount.backends.base import BackendError, NotFound
from objmount.fs import _fuse_error


def test_each_exception_maps_to_its_errno() -> None:
    assert _fuse_error(NotFound("x")).errno == errno.ENOENT
    assert _fuse_error(NotADirectoryError("x")).errno == errno.ENOTDIR
    assert _fuse_error(BackendError("store said no")).errno == errno.EIO
    assert _fuse_error(pyfuse3.FUSEError(errno.EROFS)).errno == errno.EROFS


def test_a_bug_is_logged_with_its_traceback_and_answered_eio(caplog) -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        assert _fuse_error(exc).errno == errno.EIO
    assert "internal error (answered EIO)" in caplog.text
    assert "Traceback" in caplog.text
