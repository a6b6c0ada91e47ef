"""Version fences of the speed-up shims (docs/performance.md): a shim that leans on a
library's internals was written against a range of that library's versions, and these tests
fail as soon as the installed version, or the range the project's pin allows, leaves it.
Then the shim is checked against the new version (or dropped) and its range moved.

The aiosmtplib fence lives beside the mailer's shim, with its own test."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from sandbox.mailsink.smtp import WRITTEN_FOR as SINK_SMTP
from shared.sqlite_inline import WRITTEN_FOR as SQLITE_INLINE

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def release(text: str) -> tuple[int, ...]:
    """The numeric release of a version ("2.0.58" -> (2, 0, 58)); a pre- or post-release
    suffix is left out, so "2.1.0b1" counts as 2.1.0."""
    match = re.match(r"\d+(\.\d+)*", text)
    assert match, f"not a version: {text!r}"
    return tuple(int(part) for part in match.group(0).split("."))


def pinned(distribution: str) -> tuple[str | None, str | None]:
    """The lower (>=) and upper (<) bound pyproject.toml gives `distribution`."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for spec in dependencies:
        name = re.match(r"[A-Za-z0-9_.-]+", spec)
        if name and name.group(0).lower() == distribution:
            lower = re.search(r">=\s*([0-9][^,;\s]*)", spec)
            upper = re.search(r"<\s*([0-9][^,;\s]*)", spec)
            return (lower.group(1) if lower else None, upper.group(1) if upper else None)
    raise AssertionError(f"{distribution} is not a dependency in pyproject.toml")


def test_release_reads_versions() -> None:
    assert release("2.0.58") == (2, 0, 58)
    assert release("2.1.0b1") == (2, 1, 0)
    assert release("2.1") < release("2.1.0") and release("2.0.99") < release("2.1")


def test_installed_sqlalchemy_is_the_one_the_inline_dialect_was_written_for() -> None:
    distribution, lowest, excluded = SQLITE_INLINE
    installed = version(distribution)
    assert release(lowest) <= release(installed) < release(excluded), (
        f"shared/sqlite_inline.py subclasses {distribution}'s aiosqlite adapter as it is in"
        f" [{lowest}, {excluded}); {installed} is installed: check the dialect against it"
        " (bench/sqlite_driver.py, tests/unit/test_sqlite_writes.py) and move WRITTEN_FOR,"
        " or drop the dialect"
    )


def test_the_pin_keeps_sqlalchemy_inside_the_inline_dialects_range() -> None:
    distribution, lowest, excluded = SQLITE_INLINE
    lower, upper = pinned(distribution)
    assert lower is not None and release(lower) >= release(lowest), (
        f"pyproject.toml allows {distribution} below {lowest}, which the inline dialect was"
        " not written for"
    )
    assert upper is not None and release(upper) <= release(excluded), (
        f"pyproject.toml allows {distribution} from {excluded} on, past what"
        " shared/sqlite_inline.py was written for"
    )


def test_installed_aiosmtpd_is_the_one_the_sinks_data_reader_was_written_for() -> None:
    distribution, lowest, excluded = SINK_SMTP
    installed = version(distribution)
    assert release(lowest) <= release(installed) < release(excluded), (
        f"sandbox/mailsink/smtp.py overrides {distribution}'s DATA and calls its internals as"
        f" they are in [{lowest}, {excluded}); {installed} is installed: check SinkSMTP against"
        " it (tests/sandbox/test_mailsink.py) and move WRITTEN_FOR, or drop SinkSMTP"
    )
