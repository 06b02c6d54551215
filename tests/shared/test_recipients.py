"""The one rule for a recipient address (pipeline_shared.recipients), with the facts it rests on."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from pipeline_shared.recipients import RecipientAddress, RecipientRefused, check_recipient


@pytest.mark.parametrize(
    ("address", "why"),
    [
        # RFC 6531: a non-ASCII local part needs SMTPUTF8, known only when sending.
        ("üser@exämple.com", "Internationalized characters before the @-sign"),
        # RFC 5321 4.5.3.1.1: 64 octets before the @.
        ("a" * 65 + "@example.com", "too long before the @-sign"),
        # RFC 5321 4.5.3.1.3: a path of 256 octets, 254 of them the address.
        ("a@" + ".".join(["b" * 63] * 4) + ".com", "longer than an email address can be"),
        ("a@example.com" + "x" * 10_000, "longer than an email address can be"),
        # Header injection.
        ("a@example.com\r\nBcc: victim@example.com", "invalid characters"),
        ("a@example.com\nSubject: hi", "invalid characters"),
        # A display name is the sender's; a list is several recipients.
        ("Support Team <a@example.com>", "display name"),
        ('"victim@example.com" <a@example.com>', "display name"),
        ("a@example.com, b@example.com", "invalid characters"),
        ('"a b"@example.com', "Quoting"),
        ("a@[127.0.0.1]", "bracketed IP address"),
        ("a@localhost", "should have a period"),
        ("a\u202e@example.com", "RIGHT-TO-LEFT OVERRIDE"),
        ("", "@-sign"),
    ],
)
def test_an_address_the_notifier_cannot_deliver_to_is_refused_saying_why(address: str, why: str) -> None:
    with pytest.raises(RecipientRefused) as refused:
        check_recipient(address)

    assert why in str(refused.value)
    assert repr(address[:80])[:-1] in str(refused.value)  # names it, cut when long


def test_64_characters_before_the_at_are_allowed() -> None:
    address = "a" * 64 + "@example.com"
    assert check_recipient(address).address == address


def test_an_internationalised_domain_is_kept_and_sent_in_its_idna_form() -> None:
    recipient = check_recipient("Owner@EXÄMPLE.com")

    assert recipient.address == "Owner@exämple.com"
    assert recipient.smtp_address == "Owner@xn--exmple-cua.com"


def test_as_a_field_it_refuses_with_its_own_message_and_stores_the_normalised_address() -> None:
    class Start(BaseModel):
        email: RecipientAddress

    assert Start(email="a@EXAMPLE.com").email == "a@example.com"
    with pytest.raises(ValidationError) as refused:
        Start(email="a" * 65 + "@example.com")
    [error] = refused.value.errors()
    assert error["type"] == "recipient_address" and error["msg"].startswith("'aaaa")
