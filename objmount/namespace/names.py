"""Which object-key segments can be POSIX file names.

A key segment becomes a file or directory name only if it is non-empty, not
`.` or `..`, valid UTF-8 (no lone surrogate: the listing database stores
UTF-8), at most 255 bytes in it and free of NUL; anything else would make the
kernel, a program or the database misbehave, so such keys are skipped (and
reported).
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
    try:
        size_bytes = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size_bytes > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    return None
