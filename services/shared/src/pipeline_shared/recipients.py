"""The one rule for a recipient address: an address the notifier can deliver to, or a refusal naming why.

The gateway checks a pipeline's ``email`` with it at start, so an address
nobody can send to is a 422 then rather than an email that fails after the
run; the notifier checks it again before composing, for pipelines accepted
before this rule existed, and sends to the form it returns. Whatever else
comes to accept an address uses :data:`RecipientAddress` too.

The rule, and the facts behind it:

- One bare address, ``local@domain``: no display name, no angle brackets, no
  list, no quoted local part, no ``[IP]`` domain, no whitespace or control
  character (a CR or LF would be a header injection). A display name is the
  sender's to choose; letting a caller set one is a way to dress an email up.
- At most 64 octets before the ``@`` (RFC 5321 section 4.5.3.1.1) and 254 in
  all: the path, ``<`` address ``>``, is at most 256 octets (4.5.3.1.3). The
  domain's own limit (255, 4.5.3.1.2) is the DNS's 253 in practice.
- The part before the ``@`` is ASCII. A non-ASCII local part needs the relay's
  SMTPUTF8 extension (RFC 6531); aiosmtplib uses it when the server offers
  it, but whether the relay does is only known when the email is sent, after
  the run. Refusing such an address at start is the honest default.
- A non-ASCII (IDN) domain is fine: it is sent in its IDNA form
  (``xn--...``), which every relay takes, so no SMTPUTF8 is needed.
- The domain is one the public DNS could hold (not ``localhost``, ``.test``
  or another special-use name), as pydantic's ``EmailStr`` already required.

Parsing is email-validator's (the library behind pydantic's ``EmailStr``),
with its strict options: it implements RFC 5321/5322/6531 and IDNA 2008,
which no hand-written pattern here should try to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

#: RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, two of them the angle brackets.
MAX_ADDRESS_OCTETS = 254
#: RFC 5321 section 4.5.3.1.1.
MAX_LOCAL_PART_OCTETS = 64
#: Characters of a refused address repeated in the refusal; the rest is cut.
SHOWN_CHARS = 80


class RecipientRefused(ValueError):
    """An address the notifier cannot deliver to; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Recipient:
    #: The address as stored and shown: normalised (domain lower-cased, in Unicode).
    address: str
    #: The address as SMTP sends it: the domain in its IDNA (ASCII) form.
    smtp_address: str


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")


def check_recipient(text: str) -> Recipient:
    """``text`` as an address the notifier can send to; :class:`RecipientRefused` naming why not."""
    # Checked first so a megabyte of text costs nothing more than its length;
    # email-validator checks the same limit, and the rest, afterwards.
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_OCTETS:
        raise RecipientRefused(
            f"{_shown(text)} is longer than an email address can be ({MAX_ADDRESS_OCTETS} octets, RFC 5321)"
        )
    try:
        parsed = validate_email(
            text,
            allow_smtputf8=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            strict=True,
            check_deliverability=False,
        )
    except EmailNotValidError as exc:
        raise RecipientRefused(f"{_shown(text)} is not an address the pipelines can email: {exc}") from exc
    assert parsed.ascii_email is not None  # set whenever SMTPUTF8 is not allowed
    return Recipient(address=parsed.normalized, smtp_address=parsed.ascii_email)


def _checked(text: str) -> str:
    try:
        return check_recipient(text).address
    except RecipientRefused as exc:
        # A custom error type so the message reads as written, without pydantic's "Value error, ".
        raise PydanticCustomError("recipient_address", str(exc)) from exc


#: A field holding a recipient address: checked by :func:`check_recipient`, stored normalised.
RecipientAddress = Annotated[
    str,
    AfterValidator(_checked),
    Field(json_schema_extra={"format": "email", "maxLength": MAX_ADDRESS_OCTETS}),
]
