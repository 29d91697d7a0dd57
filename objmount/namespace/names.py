"""Which object-key segments can be POSIX file names.

A key segment becomes a file or directory name only if it is non-empty, not
`.` or `..`, at most 255 bytes in UTF-8 and free of NUL; anything else would
make the kernel or a program misbehave, so such keys are skipped (and reported).
"""

MAX_NAME_BYTES = 255


def name_problem(name: str) -> str | None:
    """Return why `name` cannot be a file name, or None if it can."""
    if name == "":
        return "empty path segment"
    if name in (".", ".."):
        return f"'{name}' path segment"
    if "\0" in name:
        return "NUL byte in name"
    if "/" in name:
        return "'/' in name"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    return None
