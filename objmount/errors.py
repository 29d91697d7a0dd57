"""The one error type users see: a one-line message and an exit code.

Everything that can go wrong before a mount is live ends as an ObjmountError,
which the CLI prints as a single line (no traceback) and turns into the exit code.
"""


class ObjmountError(Exception):
    """A failure explained in one line; `exit_code` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ObjmountError):
    """The rclone.conf, environment or command line does not describe a usable remote."""

    exit_code = 2


class MountpointError(ObjmountError):
    """The mountpoint cannot be used (missing, not a directory, already mounted...)."""

    exit_code = 3


class EtlError(ObjmountError):
    """An `objmount etl` stage cannot run or did not finish (download, archive, staging, upload)."""

    exit_code = 4
