"""The web viewer and JSON API, built per store so tests can run it in-process."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from .models import MessageDetail, MessageSummary
from .parsing import (
    TEXT_URL_RE,
    all_headers,
    attachment_content_type,
    attachment_filename,
    attachment_parts,
    build_detail,
    find_bodies,
    header_text,
    html_for_iframe,
    part_bytes,
    part_text,
    trim_url,
)
from .store import LoadedMessage, MailStore

TEMPLATES_DIR = Path(__file__).parent / "templates"
REFRESH_SECONDS = 5
# The source tab is for reading headers and structure; megabytes of base64 in a <pre>
# would only freeze the browser, and the full source is one click away.
RAW_PREVIEW_LIMIT = 256 * 1024

# The viewer pages themselves run no script at all (tabs are CSS-only), so their policy
# can forbid everything except inline styles and the body frame.
VIEWER_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# The mail body is untrusted: no script, no forms, no plugins, no fetches. Remote images,
# styles and fonts stay allowed because that is what the recipient sees (application
# mails reference hosted logos). The sandbox directive repeats the iframe's attribute so
# opening /html directly in a tab is just as contained.
BODY_CSP = (
    "default-src 'none'; img-src 'self' data: http: https:; "
    "style-src 'unsafe-inline' http: https:; font-src data: http: https:; "
    "media-src data: http: https:; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)
# Attachments are attacker-controlled bytes on the viewer's origin: only types that
# cannot script are displayed inline, everything else is a download.
INLINE_TYPES = frozenset(
    {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"}
)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TABS = ("html", "text", "links", "headers", "source")
DISPLAY_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")


def _filesize(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _localtime(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _ago(moment: datetime) -> str:
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 5:
        return "just now"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length} {unit} ago"
    return f"{seconds} s ago"


def _linkify(text: str) -> Markup:
    """Escape text and make http(s) URLs in it clickable."""
    pieces: list[str] = []
    position = 0
    for match in TEXT_URL_RE.finditer(text):
        url = trim_url(match.group(0))
        pieces.append(str(escape(text[position : match.start()])))
        pieces.append(
            f'<a href="{escape(url)}" target="_blank" rel="noopener noreferrer">{escape(url)}</a>'
        )
        position = match.start() + len(url)
    pieces.append(str(escape(text[position:])))
    return Markup("".join(pieces))


_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f"\\/;]')


def _content_disposition(kind: str, filename: str) -> str:
    # filename* carries the real (possibly non-ASCII) name; the plain filename is a
    # sanitized ASCII fallback that cannot break out of the header.
    fallback = _UNSAFE_FILENAME_CHARS.sub("_", filename.encode("ascii", "replace").decode())
    encoded = quote(filename, safe="")
    return f"{kind}; filename=\"{fallback or 'attachment'}\"; filename*=UTF-8''{encoded}"


def create_app(store: MailStore, *, smtp_address: str | None = None) -> FastAPI:
    """Viewer + API over `store`. smtp_address only feeds the hint on the empty list page."""
    # Swagger UI would pull its assets from a CDN; the schema alone is enough for tools.
    app = FastAPI(title="Mail sink", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined
    )
    env.filters.update(filesize=_filesize, localtime=_localtime, ago=_ago, linkify=_linkify)

    def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(**context)
        return HTMLResponse(
            html,
            status_code=status_code,
            headers={**COMMON_HEADERS, "Content-Security-Policy": VIEWER_CSP},
        )

    def load_or_404(message_id: str) -> LoadedMessage:
        loaded = store.load(message_id)
        if loaded is None:
            raise HTTPException(status_code=404, detail="message not found")
        return loaded

    # Registered for Starlette's base class so router-level 404s get the same treatment.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path == "/health":
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        response = page("error.html", status_code=exc.status_code, message=str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    # -- API ---------------------------------------------------------------------------

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "messages": len(store)}

    @app.get("/api/messages", response_model=list[MessageSummary])
    def api_list(to: str | None = None) -> list[MessageSummary]:
        return store.messages(to=to)

    @app.get("/api/messages/{message_id}", response_model=MessageDetail)
    def api_detail(message_id: str) -> MessageDetail:
        loaded = load_or_404(message_id)
        return build_detail(loaded.summary, loaded.message)

    @app.get("/api/messages/{message_id}/raw")
    def api_raw(message_id: str) -> Response:
        raw = store.raw(message_id)
        if raw is None:
            raise HTTPException(status_code=404, detail="message not found")
        # text/plain so a browser shows it; the bytes are returned exactly as received.
        return Response(raw, media_type="text/plain; charset=utf-8", headers=COMMON_HEADERS)

    @app.delete("/api/messages")
    def api_delete_all() -> dict[str, int]:
        return {"deleted": store.delete_all()}

    @app.delete("/api/messages/{message_id}")
    def api_delete(message_id: str) -> dict[str, int]:
        if not store.delete(message_id):
            raise HTTPException(status_code=404, detail="message not found")
        return {"deleted": 1}

    # -- viewer ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def list_page(to: str | None = None) -> HTMLResponse:
        return page(
            "list.html",
            messages=store.messages(to=to),
            total=len(store),
            to=to or "",
            refresh=REFRESH_SECONDS,
            smtp_address=smtp_address,
        )

    @app.post("/delete-all")
    def delete_all_form() -> RedirectResponse:
        store.delete_all()
        return RedirectResponse("/", status_code=303)

    @app.get("/messages/{message_id}", response_class=HTMLResponse)
    def message_page(message_id: str, tab: str = "html") -> HTMLResponse:
        loaded = load_or_404(message_id)
        detail = build_detail(loaded.summary, loaded.message)
        # ?tab= makes every tab linkable even though switching them needs no script.
        if tab not in TABS or (tab == "html" and detail.html is None):
            tab = "html" if detail.html is not None else "text"
        shown = [(name, header_text(loaded.message, name)) for name in DISPLAY_HEADERS]
        raw_preview = loaded.raw[:RAW_PREVIEW_LIMIT].decode("utf-8", errors="replace")
        return page(
            "message.html",
            m=detail,
            tab=tab,
            shown_headers=[(name, value) for name, value in shown if value],
            all_headers=all_headers(loaded.message),
            raw_preview=raw_preview,
            raw_truncated=len(loaded.raw) > RAW_PREVIEW_LIMIT,
        )

    @app.get("/messages/{message_id}/html", response_class=HTMLResponse)
    def message_html(message_id: str) -> HTMLResponse:
        loaded = load_or_404(message_id)
        html_part = find_bodies(loaded.message).html_part
        if html_part is None:
            raise HTTPException(status_code=404, detail="message has no HTML part")
        cid_urls = {
            a.content_id: f"/messages/{message_id}/attachments/{a.index}"
            for a in loaded.summary.attachments
            if a.content_id
        }
        return HTMLResponse(
            html_for_iframe(part_text(html_part), cid_urls),
            headers={**COMMON_HEADERS, "Content-Security-Policy": BODY_CSP},
        )

    @app.get("/messages/{message_id}/attachments/{index}")
    def attachment(message_id: str, index: int, download: bool = False) -> Response:
        loaded = load_or_404(message_id)
        parts = attachment_parts(loaded.message)
        if not 0 <= index < len(parts):
            raise HTTPException(status_code=404, detail="attachment not found")
        part = parts[index]
        content_type = part.get_content_type()
        inline = not download and content_type in INLINE_TYPES
        filename = attachment_filename(part) or f"attachment-{index}"
        headers = {
            **COMMON_HEADERS,
            "Content-Disposition": _content_disposition(
                "inline" if inline else "attachment", filename
            ),
        }
        if content_type != "application/pdf":
            # Chrome refuses to run its PDF viewer in a sandboxed document, so PDFs are
            # the one type served without it.
            headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src 'self'"
        return Response(part_bytes(part), media_type=attachment_content_type(part), headers=headers)

    return app
