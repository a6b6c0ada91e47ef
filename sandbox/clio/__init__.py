"""A stand-in for the Clio Manage API v4 subset the sync service uses, seeded with a demo firm."""

from sandbox.clio.app import create_app
from sandbox.clio.settings import SandboxSettings
from sandbox.clio.state import SandboxState

__all__ = ["SandboxSettings", "SandboxState", "create_app"]
