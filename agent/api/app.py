"""The local HTTP API: what a button in the matter software or the web console calls.

It adds no business rule of its own. Every endpoint calls the link engine, the debts read side or the postings
outbox, and maps their errors to HTTP status codes. Money is a decimal string in JSON, never a float, both ways.
It binds 127.0.0.1 by default. Every endpoint except ``GET /health`` needs ``Authorization: Bearer <api-token>``,
and the settings endpoints need the admin token. Both tokens are secrets in the keyring, made on first start.
"""

import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import logging
import math
import os
import secrets as pysecrets
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.core.errors import ConfigurationError, DataError, LedgerlinkError, RuleError, TransientError
from agent.core.model import MerchantAccount, to_decimal
from agent.core.scrub import scrub
from agent.engine.links import Link, LinkRequest, sent_markers
from agent.home.secrets import Secrets
from agent.runtime import Runtime
from agent.state.schema import firm_clients, payments, postings
from agent.state.store import utcnow
from connectors.providers.contract import ProviderError

log = logging.getLogger("ledgerlink.api")

TOKEN = "api-token"
ADMIN_TOKEN = "api-admin-token"
NO_DELIVERY = "sending links is not available in this build (agent.engine.sending is not installed)"


def _send_link() -> Callable[..., Any] | None:
    """agent.engine.sending's send_link if that module is present; its own import errors are real errors."""
    if importlib.util.find_spec("agent.engine.sending") is None:
        return None
    return getattr(importlib.import_module("agent.engine.sending"), "send_link", None)


send_link = _send_link()


def ensure_token(store: Secrets, name: str = TOKEN) -> str:
    """The token kept as secret ``name``, made and stored on first use so no one has to invent one."""
    try:
        return store.get(name)
    except ConfigurationError:
        token = pysecrets.token_urlsafe(32)
        store.set(name, token)
        log.info("created the %s secret; 'ledgerlink api token%s' prints it", name,
                 " --admin" if name == ADMIN_TOKEN else "")
        return store.get(name)


# ------------------------------------------------------------------------------------------- models


def _money_in(value: Any) -> Decimal:
    if isinstance(value, float):
        raise ValueError('send money as a decimal string, e.g. "250.00", not a JSON number')
    try:
        return to_decimal(value)
    except DataError as exc:
        raise ValueError(str(exc)) from None


MoneyIn = Annotated[Decimal, BeforeValidator(_money_in),
                    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["250.00"]})]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Out):
    error: str


class HealthOut(Out):
    status: Literal["ok"] = "ok"
    version: str


class ComponentOut(Out):
    last_ok_at: dt.datetime | None
    last_error_at: dt.datetime | None
    last_error: str | None


class StatusOut(Out):
    version: str
    now: dt.datetime
    last_sync: dt.datetime | None = Field(description="When the last sync of the firm database finished.")
    lag_seconds: float | None = Field(description="Seconds since the last successful sync; null before the first.")
    backlog: dict[str, int] = Field(description="Postings per state.")
    components: dict[str, ComponentOut] = Field(description="Last success and last error per part of the agent.")


class MatterOut(Out):
    key: str
    number: str
    name: str
    status: str
    client_key: str | None
    client_name: str | None = None
    link_sent: bool = Field(False, description="The 'payment link sent' marker: an outstanding link exists.")


class StatementOut(Out):
    key: str
    number: str
    issue_date: dt.date | None
    due_date: dt.date | None
    amount: Decimal
    balance: Decimal
    currency: str


class LinkOut(Out):
    id: str
    status: str
    url: str | None
    amount: Decimal
    currency: str
    description: str
    account: str
    matter_key: str | None
    payer_name: str | None
    payer_email: str | None
    expires_at: dt.datetime
    created_at: dt.datetime
    provider_ref: str | None
    invoice_number: str | None
    status_reason: str | None
    flagged: str | None
    replaces: str | None
    existing: bool = Field(description="True when the debt already had this link and no new one was made.")
    warnings: list[str]


class MatterDetailOut(Out):
    matter: MatterOut
    statements: list[StatementOut]
    open_balance: dict[str, Decimal] = Field(description="Per currency.")
    pending_collections: Decimal
    unposted_payments: Decimal
    default_amount: Decimal = Field(description="What a new link asks for: the balance after pending money.")
    default_description: str
    currency: str
    payer_name: str | None
    payer_email: str | None
    existing_link: LinkOut | None
    link_sent: bool


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matter: str = Field(description="Matter number or key.")
    statements: dict[str, MoneyIn] = Field(default_factory=dict, description="Statement number or key -> amount.")
    amount: MoneyIn | None = Field(None, description="Defaults to the open balance after pending money.")
    description: str | None = None
    account: str | None = Field(None, description="Merchant account; the default account when absent.")


class QuickLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    email: str
    amount: MoneyIn
    invoice: str | None = None
    due_date: dt.date | None = None
    description: str | None = None
    account: str | None = None


class Recreate(BaseModel):
    """Optional changes for the new link of Cancel & Create New; the old link's matter and account otherwise."""

    model_config = ConfigDict(extra="forbid")

    statements: dict[str, MoneyIn] = Field(default_factory=dict)
    amount: MoneyIn | None = None
    description: str | None = None
    account: str | None = None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = "cancelled by staff"


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms"]


class PostingOut(Out):
    id: int
    payment_id: str
    reference: str
    kind: str
    statement_key: str | None
    matter_key: str | None
    amount: Decimal
    currency: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime | None
    note: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    posted_at: dt.datetime | None


class PaymentOut(Out):
    id: str
    account: str
    provider: str
    payment_ref: str
    link_id: str | None
    amount: Decimal
    currency: str
    status: str
    method: str
    status_at: dt.datetime
    confirmed_at: dt.datetime | None
    created_at: dt.datetime


class PostingDetailOut(Out):
    posting: PostingOut
    payment: PaymentOut
    allocations: list[PostingOut] = Field(description="Every posting of the same payment.")


class RetriedOut(Out):
    retried: int


class AccountSettings(BaseModel):
    """The per-account texts and timings an admin may change from the console."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    default_message: str | None = None
    disclaimer: str | None = None
    reminder_days: list[int] | None = None
    expiry_days: int | None = None


# ------------------------------------------------------------------------------------------- helpers


def _link(link: Link) -> LinkOut:
    return LinkOut(**{f.name: getattr(link, f.name) for f in dataclasses.fields(link)})


@contextmanager
def _found(what: str) -> Iterator[None]:
    """A DataError while looking up the path's own id is a 404, not a 422."""
    try:
        yield
    except DataError:
        raise HTTPException(404, f"unknown {what}") from None


def _plain(value: Any) -> Any:
    """A SendRecord of any shape (dataclass, pydantic model, mapping) as JSON-ready data, money as strings."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": scrub(message)}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    def handle(status: int) -> Callable[[Request, Exception], JSONResponse]:
        return lambda _request, exc: _error(status, str(exc))

    app.add_exception_handler(RuleError, handle(422))
    app.add_exception_handler(DataError, handle(422))
    app.add_exception_handler(ConfigurationError, handle(500))
    app.add_exception_handler(ProviderError, handle(502))
    app.add_exception_handler(LedgerlinkError, handle(500))

    def transient(_request: Request, exc: Exception) -> JSONResponse:
        wait = getattr(exc, "retry_after", None) or 5
        return _error(503, str(exc), {"Retry-After": str(math.ceil(wait))})

    def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": scrub(f"invalid request: {problems}"),
                             "detail": jsonable_encoder(exc.errors(), exclude={"input", "ctx"})}, status_code=422)

    app.add_exception_handler(TransientError, transient)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)


# ------------------------------------------------------------------------------------------- settings file


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    raise ConfigurationError(f"cannot write {value!r} to the config file")


def _toml_table(name: str, table: Mapping[str, Any]) -> list[str]:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines = [f"[{name}]"] if name and (plain or not nested) else []
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in plain.items()]
    for key, sub in nested.items():
        lines += ["", *_toml_table(f"{name}.{json.dumps(key)}" if name else json.dumps(key), sub)]
    return lines


def dump_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the settings file: tables, strings, numbers, booleans and lists of those."""
    return "\n".join(_toml_table("", data)).lstrip("\n") + "\n"


def write_account_settings(config: Path, name: str, changes: AccountSettings) -> MerchantAccount:
    """Validate and write one account's changes; the file is replaced whole so a crash never leaves half of it.

    Comments in the file are not kept: the file is rewritten from its parsed content.
    """
    data = tomllib.loads(config.read_text(encoding="utf-8")) if config.exists() else {}
    accounts = data.setdefault("accounts", {})
    merged = {**accounts.get(name, {}), **changes.model_dump(exclude_none=True)}
    try:
        account = MerchantAccount(name=name, **merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RuleError(f"invalid settings for account {name!r}: {problems}") from None
    accounts[name] = merged
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(dump_toml(data), encoding="utf-8")
    os.replace(tmp, config)
    return account


# ------------------------------------------------------------------------------------------- the app


def create_app(rt: Runtime) -> FastAPI:
    """The API over one runtime. Tokens are read on the first request, so building the app needs no secrets."""
    app = FastAPI(title="Ledgerlink local API", version=__version__,
                  description=(__doc__ or "").strip(), separate_input_output_schemas=True)
    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False)

    @cache
    def tokens() -> tuple[str, str]:
        return ensure_token(rt.secrets, TOKEN), ensure_token(rt.secrets, ADMIN_TOKEN)

    def role(credentials: HTTPAuthorizationCredentials | None) -> str:
        given = credentials.credentials if credentials else ""
        user, admin = tokens()
        if given and pysecrets.compare_digest(given, admin):
            return "admin"
        if given and pysecrets.compare_digest(given, user):
            return "user"
        raise HTTPException(401, "missing or wrong bearer token; 'ledgerlink api token' prints it",
                            headers={"WWW-Authenticate": "Bearer"})

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return role(credentials)

    def require_admin(who: Annotated[str, Depends(require_token)]) -> str:
        if who != "admin":
            raise HTTPException(403, "this changes settings: use the admin token ('ledgerlink api token --admin')")
        return who

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}
    api = APIRouter(dependencies=[Depends(require_token)], responses=errors)
    admin = APIRouter(dependencies=[Depends(require_admin)], responses={**errors, 403: {"model": ErrorOut}},
                      tags=["admin"])
    missing: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}

    @app.get("/health", response_model=HealthOut, tags=["status"])
    def health() -> HealthOut:
        """Liveness for a service monitor; no token needed and nothing private in it."""
        return HealthOut(version=__version__)

    @api.get("/status", response_model=StatusOut, tags=["status"])
    def status() -> StatusOut:
        parts = rt.store.component_status()
        with rt.store.read() as conn:
            backlog = dict(conn.execute(select(postings.c.state, func.count()).group_by(postings.c.state)).all())
        now = utcnow()
        last_sync = parts.get("sync", {}).get("last_ok_at")
        return StatusOut(
            version=__version__, now=now, last_sync=last_sync,
            lag_seconds=(now - last_sync).total_seconds() if last_sync else None, backlog=backlog,
            components={name: ComponentOut(**{k: row[k] for k in ComponentOut.model_fields})
                        for name, row in parts.items()},
        )

    @api.get("/matters", response_model=list[MatterOut], tags=["matters"])
    def matters(q: Annotated[str, Query(min_length=1, description="Matter number, matter name or client")]
                ) -> list[MatterOut]:
        from agent.state.mirror import search_matters

        with rt.store.read() as conn:
            rows = search_matters(conn, q)
            sent = sent_markers(conn, [r.matter.key for r in rows])
        return [MatterOut(**r.matter.model_dump(mode="json"), client_name=r.client_name, link_sent=r.matter.key in sent)
                for r in rows]

    @api.get("/matters/{ref}", response_model=MatterDetailOut, responses=missing, tags=["matters"])
    def matter(ref: str) -> MatterDetailOut:
        """What the Send for Payment popup shows before a link is made."""
        from agent.state.mirror import get_matter, open_balance

        with _found(f"matter {ref!r}"), rt.store.read() as conn:
            found = get_matter(conn, ref)
            client = conn.execute(select(firm_clients.c.name).where(firm_clients.c.key == found.client_key)).scalar()
        defaults = rt.links.defaults(found.key)
        return MatterDetailOut(
            matter=MatterOut(**found.model_dump(mode="json"), client_name=client,
                             link_sent=defaults.existing is not None),
            statements=[StatementOut.model_validate(s) for s in defaults.statements],
            open_balance=open_balance(defaults.statements), pending_collections=defaults.pending_collections,
            unposted_payments=defaults.unposted_payments, default_amount=defaults.amount,
            default_description=defaults.description, currency=defaults.currency,
            payer_name=defaults.payer_name, payer_email=defaults.payer_email,
            existing_link=_link(defaults.existing) if defaults.existing else None,
            link_sent=defaults.existing is not None,
        )

    def created(link: Link, response: Response) -> LinkOut:
        response.status_code = 200 if link.existing else 201
        return _link(link)

    @api.post("/links", response_model=LinkOut, status_code=201, tags=["links"],
              responses={200: {"model": LinkOut, "description": "The debt's existing outstanding link"}})
    def create_link(body: LinkCreate, response: Response) -> LinkOut:
        """201 with a new link, or 200 with ``existing: true`` when the debt already has an outstanding one."""
        return created(rt.links.create(LinkRequest(**body.model_dump())), response)

    @api.post("/links/quick", response_model=LinkOut, status_code=201, tags=["links"],
              responses={200: {"model": LinkOut, "description": "The invoice's existing outstanding link"}})
    def create_quick_link(body: QuickLinkCreate, response: Response) -> LinkOut:
        """A link for someone without a matter (name, email, amount, optional invoice)."""
        return created(rt.links.create(LinkRequest(**body.model_dump())), response)

    @api.get("/links", response_model=list[LinkOut], tags=["links"])
    def list_links(status: Annotated[list[str] | None, Query(description="Repeat for several")] = None,
                   matter: str | None = None) -> list[LinkOut]:
        return [_link(link) for link in rt.links.list(status, matter)]

    @api.get("/links/{link_id}", response_model=LinkOut, responses=missing, tags=["links"])
    def get_link(link_id: str) -> LinkOut:
        with _found(f"link {link_id!r}"):
            return _link(rt.links.get(link_id))

    @api.post("/links/{link_id}/cancel", response_model=LinkOut, responses=missing, tags=["links"])
    def cancel_link(link_id: str, body: CancelIn | None = None) -> LinkOut:
        with _found(f"link {link_id!r}"):
            rt.links.get(link_id)
        return _link(rt.links.cancel(link_id, reason=(body or CancelIn()).reason))

    @api.post("/links/{link_id}/recreate", response_model=LinkOut, status_code=201, responses=missing,
              tags=["links"])
    def recreate_link(link_id: str, body: Recreate | None = None) -> LinkOut:
        """Cancel & Create New: the old link is cancelled at the provider first, then a new one is made."""
        with _found(f"link {link_id!r}"):
            old = rt.links.get(link_id)
        request = None
        if body is not None:
            fields = body.model_dump()
            if old.matter_key is None:
                request = LinkRequest(description=body.description)
            else:
                request = LinkRequest(matter=old.matter_key, **{**fields, "account": body.account or old.account})
        return _link(rt.links.recreate(link_id, request))

    @api.post("/links/{link_id}/send", response_model=dict[str, Any], responses={**missing, 501: {"model": ErrorOut}},
              tags=["links"])
    def send(link_id: str, body: SendIn) -> dict[str, Any]:
        """Send the link to the payer by email or text (agent.engine.sending); 501 when delivery is not installed."""
        with _found(f"link {link_id!r}"):
            rt.links.get(link_id)
        if send_link is None:
            raise HTTPException(501, NO_DELIVERY)
        return _plain(send_link(rt, link_id, body.channel))

    @api.get("/postings", response_model=list[PostingOut], tags=["postings"])
    def list_postings(status: Annotated[list[str] | None, Query(description="Repeat for several")] = None
                      ) -> list[PostingOut]:
        query = select(postings).order_by(postings.c.id)
        if status:
            query = query.where(postings.c.state.in_(status))
        with rt.store.read() as conn:
            return [PostingOut.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def posting_row(posting_id: int) -> dict[str, Any]:
        with rt.store.read() as conn:
            row = conn.execute(select(postings).where(postings.c.id == posting_id)).mappings().first()
        if row is None:
            raise HTTPException(404, f"unknown posting {posting_id}")
        return dict(row)

    @api.get("/postings/{posting_id}", response_model=PostingDetailOut, responses=missing, tags=["postings"])
    def get_posting(posting_id: int) -> PostingDetailOut:
        row = posting_row(posting_id)
        with rt.store.read() as conn:
            payment = conn.execute(select(payments).where(payments.c.id == row["payment_id"])).mappings().one()
            allocations = conn.execute(select(postings).where(postings.c.payment_id == row["payment_id"])
                                       .order_by(postings.c.id)).mappings().all()
        return PostingDetailOut(posting=PostingOut.model_validate(row),
                                payment=PaymentOut.model_validate(dict(payment)),
                                allocations=[PostingOut.model_validate(dict(a)) for a in allocations])

    def outbox() -> Any:
        from postings.outbox import Outbox

        return Outbox(rt.store, rt.connector, rt.mapping)

    @api.post("/postings/retry-failed", response_model=RetriedOut, tags=["postings"])
    def retry_failed() -> RetriedOut:
        """Every failed posting back to pending with fresh attempts, once the cause has been fixed."""
        return RetriedOut(retried=outbox().retry_failed())

    @api.post("/postings/{posting_id}/retry", response_model=PostingOut, responses=missing, tags=["postings"])
    def retry_posting(posting_id: int) -> PostingOut:
        posting_row(posting_id)
        outbox().retry(posting_id)
        return PostingOut.model_validate(posting_row(posting_id))

    @api.get("/collections", response_model=list[dict[str, Any]], tags=["direct debit"])
    def collections(matter: str | None = None, pending: bool = False) -> list[dict[str, Any]]:
        """Direct Debit collections, newest first; ``pending``: at the provider and not yet paid."""
        from agent.engine.directdebit import list_collections

        return [_plain(dataclasses.asdict(c)) for c in list_collections(rt, matter, pending)]

    @api.get("/collections/{collection_id}", response_model=dict[str, Any], tags=["direct debit"])
    def collection(collection_id: str) -> dict[str, Any]:
        from agent.engine.directdebit import get_collection

        return _plain(dataclasses.asdict(get_collection(rt, collection_id)))

    @api.post("/collections/{collection_id}/cancel", response_model=dict[str, Any], tags=["direct debit"])
    def cancel_collection(collection_id: str) -> dict[str, Any]:
        """Cancel while the provider still allows it; refused (422) once it has gone to the bank."""
        from agent.engine.directdebit import cancel_collection

        return _plain(dataclasses.asdict(cancel_collection(rt, collection_id)))

    def account_settings(name: str) -> AccountSettings:
        if name not in rt.settings.accounts:
            raise HTTPException(404, f"unknown merchant account {name!r}; configured: {sorted(rt.settings.accounts)}")
        return AccountSettings.model_validate(rt.settings.accounts[name])

    @admin.get("/settings/accounts/{name}", response_model=AccountSettings, responses=missing)
    def get_account_settings(name: str) -> AccountSettings:
        return account_settings(name)

    @admin.put("/settings/accounts/{name}", response_model=AccountSettings, responses=missing)
    def put_account_settings(name: str, body: AccountSettings) -> AccountSettings:
        """Change an account's message, disclaimer, reminders or expiry in the config file.

        The change takes effect when the agent next starts (or reloads its configuration).
        """
        account_settings(name)
        written = write_account_settings(rt.settings.config_path, name, body)
        log.info("account %s settings changed through the API: %s", name, sorted(body.model_dump(exclude_none=True)))
        return AccountSettings.model_validate(written)

    app.include_router(api)
    app.include_router(admin)
    from agent.api.console import mount

    mount(app, rt)  # the staff console: static pages calling these same endpoints with the same token
    return app


# ------------------------------------------------------------------------------------------- serving


class ApiServer:
    """uvicorn in a background thread, so the service loop keeps the main thread and its signal handlers."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Finish requests in flight, then close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_api(rt: Runtime, host: str = "127.0.0.1", port: int = 8766, *, start_timeout: float = 10.0) -> ApiServer:
    """Start the API on host:port (0 picks a free port) and return once it accepts connections."""
    ensure_token(rt.secrets, TOKEN)
    ensure_token(rt.secrets, ADMIN_TOKEN)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the local API listens on %s, not only on this computer; keep the tokens safe", host)
    config = uvicorn.Config(create_app(rt), host=host, port=port, log_config=None, lifespan="off",
                            timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ledgerlink-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigurationError(f"the local API could not listen on {host}:{port} (port in use?); "
                                     "set api_port in ledgerlink.toml")
        time.sleep(0.01)
    handle = ApiServer(server, thread)
    log.info("local API on %s (OpenAPI at %s/docs)", handle.url, handle.url)
    return handle
