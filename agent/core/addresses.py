"""Email addresses checked the one way everywhere: by email-validator's syntax rules, never by "contains @".

An address with CR/LF or other control characters would let a payer name smuggle headers into an email, and a
malformed one would only fail at the mail server, after a link was made for it. Deliverability (DNS) is not
checked: the agent runs offline beside the firm's database.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from agent.core.errors import RuleError


def check_email(address: str, field: str = "email") -> str:
    """The address in its normal form; a RuleError naming ``field`` and what is wrong otherwise."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise RuleError(f"{field}: {address!r} is not an email address ({exc})") from None
