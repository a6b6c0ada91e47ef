"""Development mail sink: a real SMTP server that keeps every message, plus a web viewer.

Run it with ``python -m sandbox.mailsink``. In tests, either
``async with running_mailsink(tmp_path) as sink`` (SMTP + HTTP on free ports), or
``MailStore`` + ``start_smtp_server`` + ``create_app`` to drive the viewer in-process.
"""

from .config import Settings
from .models import AttachmentInfo, Envelope, MessageDetail, MessageSummary
from .server import RunningMailSink, running_mailsink
from .smtp import SinkHandler, SmtpServer, start_smtp_server
from .store import MailStore
from .web import create_app

__all__ = [
    "AttachmentInfo",
    "Envelope",
    "MailStore",
    "MessageDetail",
    "MessageSummary",
    "RunningMailSink",
    "Settings",
    "SinkHandler",
    "SmtpServer",
    "create_app",
    "running_mailsink",
    "start_smtp_server",
]
