"""Progress bars on stderr for the ETL stages: files, bytes, rate and time left.

A bar may be advanced from any thread. On a terminal it redraws in place; when
stderr is a file or a pipe it prints once, when it closes.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Bar:
    """One bar: files done of a total, bytes done of a total."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._files = 0
        self._lock = threading.Lock()

    def advance(self, nbytes: int, files: int = 0) -> None:
        """Count `nbytes` more bytes and `files` more files as done."""
        with self._lock:
            self._files += files
            self._progress.update(self._task, advance=nbytes, files=self._files)


@contextmanager
def progress_bar(label: str, total_files: int, total_bytes: int | None) -> Iterator[Bar]:
    """Show a bar on stderr while the block runs; `total_bytes` None means unknown."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}/{task.fields[total_files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task(label, total=total_bytes, files=0, total_files=total_files)
    with progress:
        yield Bar(progress, task)
