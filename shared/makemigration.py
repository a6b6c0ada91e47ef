"""Developer tool: `python -m shared.makemigration <service> "message"` autogenerates a
migration for a service against a scratch SQLite database at its current head."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from shared.migrations import alembic_config


def main() -> None:
    service, message = sys.argv[1], sys.argv[2]
    migrations = Path("services") / service / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scratch.db"
        cfg = alembic_config(migrations, url)
        command.upgrade(cfg, "head")
        command.revision(cfg, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
