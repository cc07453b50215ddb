"""The firm-side model every connector maps onto, and money.

Money is always ``Decimal`` with a currency. Floats are refused at every boundary because a SQLite REAL or a JSON
number turned into money silently loses pennies.
"""

from __future__ import annotations

import datetime as dt
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from agent.core.errors import DataError

# ISO 4217 minor-unit exponents for the currencies a firm is likely to bill in; others default to 2.
CURRENCY_EXPONENTS: dict[str, int] = {"JPY": 0, "KRW": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3}


def exponent(currency: str) -> int:
    """Number of decimal places the currency allows."""
    return CURRENCY_EXPONENTS.get(currency.upper(), 2)


# The state store keeps money as exact text in a String(40) column (agent/state/types.py DecimalText); the sandbox
# and the providers take integer minor units, which must fit a signed 64-bit integer even with three decimals.
AMOUNT_TEXT_LENGTH = 40
MAX_INTEGER_DIGITS = 15

# Plain digits (ASCII only: Decimal would take Arabic-Indic digits and underscores), commas only between groups of
# three in the integer part, at most one decimal point.
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|[+-]?\.[0-9]+", re.ASCII)
# "10,50", "1.050,00", "-3,5": a comma followed by other than three digits at the end reads as a decimal comma.
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9.]*[0-9],(?:[0-9]{1,2}|[0-9]{4,})", re.ASCII)


def _parse_amount_text(value: str, field: str) -> Decimal:
    """Text to Decimal by the strict rules: a point for decimals, commas only as thousands separators."""
    text = value.strip()
    if not text:
        raise DataError(f"{field}: no amount given")
    if _AMOUNT_TEXT.fullmatch(text):
        return Decimal(text.replace(",", ""))
    if "e" in text.lower() and re.fullmatch(r"[+-]?[0-9.,]*[eE][+-]?[0-9]+", text):
        raise DataError(f"{field}: {value!r} is written with an exponent; write the amount out in full, e.g. 1000.00")
    if _DECIMAL_COMMA.fullmatch(text):
        raise DataError(f"{field}: {value!r} uses a decimal comma; write the decimals after a point, e.g. 10.50 "
                        "(a comma is only accepted between thousands, as in 1,050.00)")
    if "," in text and re.fullmatch(r"[+-]?[0-9,]+(?:\.[0-9]*)?", text, re.ASCII):
        raise DataError(f"{field}: {value!r} has a comma out of place; commas may only separate thousands, "
                        "as in 1,050.00")
    raise DataError(f"{field}: {value!r} is not a number")


# The symbol a person may write before an amount in an account of each currency (the firm's own currencies; any
# other currency symbol, Unicode category Sc, is refused naming the account's currency).
CURRENCY_SYMBOLS: dict[str, tuple[str, ...]] = {
    "GBP": ("£",), "EUR": ("€",), "USD": ("$", "US$"), "CAD": ("$", "CA$"), "AUD": ("$", "A$"), "NZD": ("$", "NZ$"),
    "JPY": ("¥",), "INR": ("₹",), "ZAR": ("R",), "CHF": ("CHF",),
}
_SPACES = re.compile(r"[ \u00a0\u202f\u2009]")  # space, no-break space, narrow no-break and thin space
_SPACE_GROUPS = re.compile(r"[+-]?[0-9]{1,3}(?: [0-9]{3})+(?:\.[0-9]*)?", re.ASCII)


def parse_amount(text: str, currency: str | None, *, field: str = "amount", positive: bool = True) -> Decimal:
    """An amount a person typed, by one rule for every entry point (CLI, bulk file, inbox, request table).

    The account's own currency symbol or code may stand before the number (``£250.00``, ``GBP 250.00``); any other
    symbol is refused naming the account's currency, never read as this currency. A space only separates
    thousands in correct groups (``1 050.00``), as a comma does: ``10 50`` is refused, never read as 1050. With
    ``currency`` None (JSON money) no symbol is accepted. The currency's decimals are checked; ``positive`` refuses
    zero and below."""
    raw = text
    body = text.strip()
    own = (*CURRENCY_SYMBOLS.get(currency, ()), currency) if currency else ()
    for prefix in sorted(own, key=len, reverse=True):
        if body.upper().startswith(prefix.upper()):
            body = body[len(prefix):].strip()
            break
    else:
        if _foreign_symbol(body):
            where = (f"this account takes {currency}; write {_example(currency)}" if currency
                     else 'write the amount as a plain decimal string, e.g. "250.00"')
            raise DataError(f"{field}: {raw.strip()!r} is written in another currency or with a symbol; {where}")
    if _SPACES.search(body):
        spaced = _SPACES.sub(" ", body)
        if not _SPACE_GROUPS.fullmatch(spaced):
            raise DataError(f"{field}: {raw.strip()!r} has a space out of place; a space may only separate "
                            "thousands, as in 1 050.00")
        body = spaced.replace(" ", "")
    amount = to_decimal(body, field=field)
    if currency:
        amount = check_decimals(amount, currency, field=field)
    if positive and amount <= 0:
        raise DataError(f"{field}: {raw.strip()!r} must be more than zero")
    return amount


def _foreign_symbol(text: str) -> bool:
    """Whether the text starts or ends with a currency symbol or an ISO code (``$``, ``US$``, ``EUR 5``, ``5€``)."""
    if not text:
        return False
    ends = (text[0], text[-1])
    lead = re.match(r"[A-Za-z]{1,3}", text)
    after = text[lead.end():lead.end() + 1] if lead else ""
    return (any(unicodedata.category(c) == "Sc" for c in ends) or bool(re.match(r"[A-Z]{3}(?:\s|[0-9])", text))
            or (lead is not None and after != "" and unicodedata.category(after) == "Sc"))


def _example(currency: str) -> str:
    symbol = CURRENCY_SYMBOLS.get(currency, (currency + " ",))[0]
    return f"250.00 or {symbol}250.00"


def to_decimal(value: Any, *, field: str = "amount") -> Decimal:
    """Convert a database or user value to Decimal exactly, refusing anything that would lose precision.

    A float is accepted only when its shortest repr is an exact decimal (how SQLite stores NUMERIC columns);
    the caller still checks the currency's decimals, so 0.30000000000000004 is rejected, never rounded. Text is
    parsed strictly (see ``_parse_amount_text``): "10,50" is refused, never read as 1050. An amount too large
    for the state store column or for integer minor units is refused here, so it is a row or request error and
    never an overflow deeper down.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise DataError(f"{field}: {value!r} is not an amount")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        result = _parse_amount_text(value, field)
    else:
        raise DataError(f"{field}: {value!r} ({type(value).__name__}) is not an amount")
    if not result.is_finite():
        raise DataError(f"{field}: {value!r} is not a finite amount")
    if result and result.adjusted() >= MAX_INTEGER_DIGITS:
        raise DataError(f"{field}: {_short(value)} is too large; an amount has at most {MAX_INTEGER_DIGITS} digits "
                        "before the decimal point")
    exp = result.as_tuple().exponent
    if (isinstance(exp, int) and exp < -AMOUNT_TEXT_LENGTH) or len(format(result, "f")) > AMOUNT_TEXT_LENGTH:
        raise DataError(f"{field}: {_short(value)} has too many digits; an amount is at most "
                        f"{AMOUNT_TEXT_LENGTH} characters long")
    return result


def _short(value: Any) -> str:
    """The value for an error message, cut so a 400-digit input does not become a 400-digit log line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_decimals(amount: Decimal, currency: str, *, field: str = "amount") -> Decimal:
    """Refuse amounts with more decimals than the currency allows (never round silently)."""
    places = exponent(currency)
    quantum = Decimal(1).scaleb(-places)
    if amount != amount.quantize(quantum, rounding=ROUND_HALF_EVEN):
        raise DataError(f"{field}: {amount} has more than {places} decimal places, which {currency} allows")
    return amount.quantize(quantum)


def to_minor(amount: Decimal, currency: str) -> int:
    """Integer minor units (pence, cents), exact: the safest way to bind money into drivers that mangle Decimal."""
    return int(check_decimals(amount, currency).scaleb(exponent(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    return Decimal(units).scaleb(-exponent(currency)).quantize(Decimal(1).scaleb(-exponent(currency)))


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("money must not be a float; pass a Decimal, an int or a decimal string")
    return value


Amount = Annotated[Decimal, BeforeValidator(_no_float)]


class Money(BaseModel):
    """An amount with its currency; arithmetic only between equal currencies."""

    model_config = ConfigDict(frozen=True)

    amount: Amount
    currency: str = Field(min_length=3, max_length=3)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise DataError(f"cannot combine {self.currency} with {other.currency}")

    def __str__(self) -> str:
        return f"{self.currency} {self.amount:,.{exponent(self.currency)}f}"


class MatterStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class StatementStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class _Record(BaseModel):
    """A firm record: ``key`` is the firm's own primary key, kept as text so any key type maps."""

    model_config = ConfigDict(frozen=True)

    key: str
    deleted: bool = False


class Client(_Record):
    name: str
    email: str | None = None
    phone: str | None = None


class Payer(_Record):
    """Who receives the link for a matter; the link rules need an email even when the link goes by text."""

    name: str
    email: str | None = None
    phone: str | None = None
    client_key: str | None = None


class Matter(_Record):
    number: str
    name: str = ""
    client_key: str | None = None
    payer_key: str | None = None
    status: MatterStatus = MatterStatus.OPEN


class Statement(_Record):
    """A bill or invoice. ``balance`` is what the firm database says is still owed on it."""

    number: str
    matter_key: str
    issue_date: dt.date | None = None
    due_date: dt.date | None = None
    amount: Amount
    balance: Amount
    currency: str = Field(min_length=3, max_length=3)
    status: StatementStatus = StatementStatus.OPEN

    @property
    def open_balance(self) -> Money:
        return Money(amount=self.balance, currency=self.currency)


ENTITY_MODELS: dict[str, type[_Record]] = {
    "clients": Client,
    "payers": Payer,
    "matters": Matter,
    "statements": Statement,
}


AccountKind = Literal["operating", "trust"]
# The UK names (SRA Accounts Rules): office money and client money.
ACCOUNT_KIND_ALIASES: dict[str, AccountKind] = {"office": "operating", "client": "trust"}
_UK_WORDS: dict[str, str] = {"operating": "office", "trust": "client"}


def _account_kind(value: Any) -> Any:
    return ACCOUNT_KIND_ALIASES.get(value, value) if isinstance(value, str) else value


def account_kind_word(kind: str, locale: str) -> str:
    """The firm's own word for an account kind: office/client in the UK, operating/trust elsewhere."""
    return _UK_WORDS.get(kind, kind) if locale.lower().endswith("-gb") else kind


def check_message(template: str) -> str:
    """A message template as an admin may write it: text and plain ``{name}`` placeholders only, so a stray brace
    or a format width (``{amount:>5000000000}``) is refused when it is saved, not when every email then fails."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc}; write braces in pairs around a placeholder, as in {{amount}}, "
                         "or double them ({{ or }}) for a brace of their own") from None
    for _, name, spec, conversion in pieces:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{template!r}: {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain placeholder; write one such as "
                             "{amount}, {description}, {name}, {invoice} or {expires}")
    return template


def render_message(template: str, values: Mapping[str, str]) -> str:
    """A checked template filled in; an unknown placeholder stays as written instead of failing the send."""
    out = []
    for text, name, _, _ in string.Formatter().parse(check_message(template)):
        out.append(text)
        if name is not None:
            out.append(values.get(name, "{" + name + "}"))
    return "".join(out)


REMINDER_LIMIT = 90  # days after sending: a payment link lives far shorter than a quarter


def _reminder_days(days: list[int]) -> list[int]:
    """Days after sending, each 1 to 90 (0 is the send itself), once each, in order."""
    wrong = [d for d in days if not 1 <= d <= REMINDER_LIMIT]
    if wrong:
        raise ValueError(f"reminder_days must be days after sending, each 1 to {REMINDER_LIMIT}: "
                         f"{', '.join(map(str, wrong))} cannot be (for example [3, 7, 14], or [] for none)")
    return sorted(set(days))


LEGACY_OPTIONS = {"success_url", "payout_fees"}  # provider options once written on the account itself


class MerchantAccount(BaseModel):
    """A receiving account at a provider (e.g. operating and trust), with its own credentials and link rules."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Annotated[AccountKind, BeforeValidator(_account_kind)] = Field(
        default="operating",
        description="operating (office) money is the firm's own; trust (client) money is posted to the matter's "
        "client ledger and must never pay a provider's fee. office and client are accepted as the UK names.",
    )
    provider: str = "sandbox"
    currency: str = Field(default="GBP", min_length=3, max_length=3)
    credentials: str | None = Field(
        default=None, description="A secret reference, e.g. 'secret:gocardless-operating'; never the token itself."
    )
    webhook_secret: str | None = Field(default=None, description="Secret reference for webhook signatures.")
    api_base: str | None = Field(default=None, description="Override the provider's API address (tests, sandboxes).")
    expiry_days: int = Field(default=7, ge=1, le=90)
    default_message: Annotated[str, AfterValidator(check_message)] = (
        "Please use the secure link below to pay {amount} for {description}.")
    disclaimer: str = ""
    reminder_days: Annotated[list[int], AfterValidator(_reminder_days)] = Field(default_factory=lambda: [3, 7, 14])
    remind_before_expiry_days: int | None = 1
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The provider's own settings (the provider's Options model, e.g. Stripe's success_url, the "
        "sandbox's payout_fees); a key the provider does not have is refused when the configuration is checked.",
    )
    fees_account: str | None = Field(
        default=None,
        description="The operating account whose payouts carry this account's fees and whose money tops up a "
        "trust account paid out net of fees; unset: the default account.",
    )

    @model_validator(mode="before")
    @classmethod
    def _provider_keys_into_options(cls, data: Any) -> Any:
        """Configs written before provider options had their own table kept these two keys on the account; they
        are read into ``options``, where the provider's model checks them."""
        if isinstance(data, dict) and LEGACY_OPTIONS & data.keys():
            data = dict(data)
            options = dict(data.get("options") or {})
            for key in LEGACY_OPTIONS & data.keys():
                options.setdefault(key, data.pop(key))
            data["options"] = options
        return data


ActorKind = Literal["user", "job", "intake", "cli", "system"]


@dataclass(frozen=True)
class Actor:
    """Who did something, for the audit trail: a named person, or the job, intake file or command that acted."""

    kind: ActorKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"
