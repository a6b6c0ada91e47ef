"""Settings common to every service, read from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_INTERNAL_TOKEN = "dev-internal-token"  # noqa: S105 - refused outside development


class ServiceSettings(BaseSettings):
    """Base settings; each service subclasses it and sets `service_name` and its port."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = ""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "envelopepay"
    delivery_limit: int = 5
    queue_expires_ms: int | None = None
    # Connections per service; a handler may hold two at once (its own and a helper's), so
    # keep pool + overflow above twice the prefetch.
    db_pool_size: int = 5
    db_max_overflow: int = 20
    bus_prefetch: int = 8
    # Most events applied together in one transaction, where a handler takes them in
    # batches (`Service.handles_batch`); such a queue has twice this many in flight.
    bus_batch: int = 16
    http_host: str = "127.0.0.1"
    http_port: int = 0
    internal_token: str = DEV_INTERNAL_TOKEN
    public_base_url: str = "http://127.0.0.1:8000"
    # How other services reach this one (its internal API); defaults to its own host and port.
    internal_base_url: str = ""
    otel_exporter_otlp_endpoint: str | None = None
    log_level: str = "INFO"
    migrate_on_start: bool | None = None
    var_dir: Path = Path("var")
    outbox_poll_seconds: float = 1.0
    # Published outbox rows are kept this long (for inspection and replay), then deleted:
    # an email's row holds no content (its sealed content is added as it is published).
    outbox_retention_hours: float = 168.0

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / (self.service_name + '.db')}"
        if not self.http_port:
            self.http_port = self.default_port
        if self.migrate_on_start is None:
            self.migrate_on_start = self.environment != "production"
        self.public_base_url = self.public_base_url.rstrip("/")
        if not self.internal_base_url:
            host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
            self.internal_base_url = f"http://{host}:{self.http_port}"
        self.internal_base_url = self.internal_base_url.rstrip("/")
        if self.environment == "production":
            self.refuse_dev_secrets()
        return self

    def refuse_dev_secrets(self) -> None:
        """Outside development a secret left at its default value is a mistake: refuse to start."""
        if self.internal_token == DEV_INTERNAL_TOKEN:
            raise ValueError("INTERNAL_TOKEN must be set in production")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
