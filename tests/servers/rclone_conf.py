"""rclone.conf sections as rclone users write them, for every server the tests start."""

from collections.abc import Mapping


def section(name: str, values: Mapping[str, str]) -> str:
    """`[name]`, then one `key = value` line per entry, in order."""
    return f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())


def parse(text: str) -> tuple[str, dict[str, str]]:
    """The name and the values of one section written by `section`."""
    lines = text.strip().splitlines()
    return lines[0].strip("[]"), dict(line.split(" = ", 1) for line in lines[1:])
