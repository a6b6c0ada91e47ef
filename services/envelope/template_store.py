"""A firm's email templates (Clio's "Bill Message Templates"): saved only when they render,
scoped to the firm, and the default that new drafts start from.

A template's subject and body are template source with autofill fields; every mistake in them
is reported here, when the template is saved, with the field it is in, so that no send fails
on a saved template.
"""

from __future__ import annotations

import difflib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from jinja2 import TemplateSyntaxError, UndefinedError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.compose import (
    AUTOFILL_FIELDS,
    DEFAULT_BODY,
    DEFAULT_SUBJECT,
    ComposedEmail,
    EmailItem,
    TemplateInvalid,
    check_template,
    compose_email,
)
from services.envelope.models import EmailTemplate
from shared.events import FirmProfile, InvoiceKind

BUILTIN_NAME = "Built-in"
MAX_NAME = 100
MAX_SUBJECT = 500
MAX_BODY = 20_000


class TemplateFieldError(ValueError):
    """The template cannot be saved; `errors` maps each form field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        self.field, self.message = next(iter(errors.items()))
        super().__init__(f"{self.field}: {self.message}")


class TemplateNotFound(LookupError):
    pass


@dataclass(frozen=True)
class TemplateText:
    subject: str
    body: str


BUILTIN = TemplateText(subject=DEFAULT_SUBJECT, body=DEFAULT_BODY)


def explain(exc: TemplateInvalid) -> str:
    """The template error in words for the person who wrote the template."""
    cause = exc.__cause__
    known = ", ".join(AUTOFILL_FIELDS)
    if isinstance(cause, UndefinedError):
        found = re.fullmatch(r"'([^']*)' is undefined", str(cause.message or ""))
        if found:
            close = difflib.get_close_matches(found[1], AUTOFILL_FIELDS, n=1)
            hint = f" Did you mean “{close[0]}”?" if close else ""
            return f"Unknown autofill field “{found[1]}”.{hint} Autofill fields are: {known}."
    if isinstance(cause, TemplateSyntaxError):
        where = f"Line {cause.lineno}: " if cause.lineno else ""
        what = str(cause.message or "the template cannot be read").rstrip(".")
        return f"{where}{what}. Autofill fields are written like {{{{ client_name }}}}."
    text = str(exc).rstrip(".")
    return f"{text[:1].upper()}{text[1:]}."


def _check(field: str, source: str, errors: dict[str, str]) -> None:
    try:
        check_template(source)
    except TemplateInvalid as exc:
        errors[field] = explain(exc)


def validate(name: str, subject: str, body: str) -> tuple[str, str, str]:
    """The template's (name, subject, body) as stored; raises TemplateFieldError."""
    errors: dict[str, str] = {}
    name = " ".join(name.split())
    subject = subject.strip()
    body = body.replace("\r\n", "\n").strip()
    if not name:
        errors["name"] = "Give the template a name."
    elif len(name) > MAX_NAME:
        errors["name"] = f"Keep the name under {MAX_NAME} characters."
    if not subject:
        errors["subject"] = "The subject cannot be empty."
    elif len(subject) > MAX_SUBJECT:
        errors["subject"] = f"Keep the subject under {MAX_SUBJECT} characters."
    else:
        _check("subject", subject, errors)
    if not body:
        errors["body"] = "The message cannot be empty."
    elif len(body) > MAX_BODY:
        errors["body"] = f"Keep the message under {MAX_BODY:,} characters."
    else:
        _check("body", body, errors)
    if errors:
        raise TemplateFieldError(errors)
    return name, subject, body


async def _name_taken(
    s: AsyncSession, firm_id: str, name: str, except_id: str | None = None
) -> bool:
    stmt = select(EmailTemplate.id).where(
        EmailTemplate.firm_id == firm_id, func.lower(EmailTemplate.name) == name.lower()
    )
    if except_id is not None:
        stmt = stmt.where(EmailTemplate.id != except_id)
    return (await s.scalar(stmt.limit(1))) is not None


def _duplicate(name: str) -> TemplateFieldError:
    return TemplateFieldError({"name": f"A template named “{name}” already exists."})


async def list_templates(s: AsyncSession, firm_id: str) -> list[EmailTemplate]:
    rows = await s.scalars(
        select(EmailTemplate)
        .where(EmailTemplate.firm_id == firm_id)
        .order_by(func.lower(EmailTemplate.name), EmailTemplate.id)
    )
    return list(rows)


async def get_template(s: AsyncSession, firm_id: str, template_id: str) -> EmailTemplate:
    row = await s.scalar(
        select(EmailTemplate).where(
            EmailTemplate.firm_id == firm_id, EmailTemplate.id == template_id
        )
    )
    if row is None:
        raise TemplateNotFound(template_id)
    return row


async def create_template(
    s: AsyncSession, firm_id: str, *, name: str, subject: str, body: str, is_default: bool = False
) -> EmailTemplate:
    name, subject, body = validate(name, subject, body)
    if await _name_taken(s, firm_id, name):
        raise _duplicate(name)
    now = datetime.now(UTC)
    row = EmailTemplate(
        id=str(uuid.uuid4()),
        firm_id=firm_id,
        name=name,
        subject=subject,
        body=body,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
    s.add(row)
    try:
        await s.flush()
    except IntegrityError as exc:  # the same name saved at the same moment
        raise _duplicate(name) from exc
    if is_default:
        await set_default(s, firm_id, row.id)
    return row


async def update_template(
    s: AsyncSession,
    firm_id: str,
    template_id: str,
    *,
    name: str,
    subject: str,
    body: str,
    is_default: bool | None = None,
) -> EmailTemplate:
    """Replace the template's text; `is_default` None leaves the firm's default as it is."""
    row = await get_template(s, firm_id, template_id)
    name, subject, body = validate(name, subject, body)
    if await _name_taken(s, firm_id, name, except_id=template_id):
        raise _duplicate(name)
    row.name, row.subject, row.body = name, subject, body
    row.updated_at = datetime.now(UTC)
    try:
        await s.flush()
    except IntegrityError as exc:
        raise _duplicate(name) from exc
    if is_default is True:
        await set_default(s, firm_id, template_id)
    elif is_default is False and row.is_default:
        await set_default(s, firm_id, None)
    return row


async def delete_template(s: AsyncSession, firm_id: str, template_id: str) -> None:
    """Drafts made from it keep their text: an envelope holds a copy, not a reference."""
    await s.delete(await get_template(s, firm_id, template_id))
    await s.flush()


async def set_default(s: AsyncSession, firm_id: str, template_id: str | None) -> None:
    """Make the template the firm's default, or with None go back to the built-in one."""
    if template_id is not None:
        await get_template(s, firm_id, template_id)
    # One statement over all the firm's rows, so that two people choosing at once still
    # leave one default.
    await s.execute(
        update(EmailTemplate)
        .where(EmailTemplate.firm_id == firm_id)
        .values(is_default=EmailTemplate.id == template_id if template_id else False)
        .execution_options(synchronize_session="fetch")
    )


async def default_template(s: AsyncSession, firm_id: str) -> EmailTemplate | None:
    return await s.scalar(
        select(EmailTemplate)
        .where(EmailTemplate.firm_id == firm_id, EmailTemplate.is_default.is_(True))
        .order_by(EmailTemplate.updated_at.desc())
        .limit(1)
    )


async def default_text(s: AsyncSession, firm_id: str) -> TemplateText:
    """What a new draft starts from: the firm's default template, else the built-in one."""
    row = await default_template(s, firm_id)
    return TemplateText(row.subject, row.body) if row is not None else BUILTIN


def sample_email(
    firm: FirmProfile, subject: str, body: str, *, pay_url: str, view_url: str
) -> ComposedEmail:
    """The template as a client would get it, filled with example values for the preview."""
    due = date.today() + timedelta(days=30)
    items = [
        EmailItem(
            invoice_id="sample-1",
            number="1042",
            kind=InvoiceKind.invoice,
            matter="00042 Estate plan",
            due_at=due,
            currency="USD",
            total_minor=180_000,
            balance_minor=125_000,
            view_url=view_url,
            pay_url=pay_url,
        )
    ]
    return compose_email(
        firm,
        "Jordan Avery",
        items,
        subject_template=subject,
        body_template=body,
        pay_all_url=pay_url,
        view_all_url=view_url,
    )
