"""The personal account's ASGI application: `create_app(settings)`.

Wires the engine's runtime, the web tables, the SMS gateway, the catalogue
and the clock together, and mounts the JSON API (`web.api_*`, described at
/openapi.json) and the Russian pages (`web.pages_*`)."""
from __future__ import annotations

import ipaddress
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from accrual.runtime import Runtime
from accrual.settings import Settings
from web.auth import Auth
from web.catalog import load_catalog, load_offers
from schemas.msisdn import is_msisdn
from web.clock import Clock, SystemClock
from web.console import Console, DeadLetters
from web.guards import Guard
from web.limits import client_key
from web.service import Cabinet
from web.sms import DatabaseOutbox, HttpGateway, SmsGateway
from web.staff import Staff
from web.store import WebStore

MSISDN_HEADER = "X-MSISDN"


@dataclass
class Context:
    settings: Settings
    runtime: Runtime
    store: WebStore
    auth: Auth
    cabinet: Cabinet
    clock: Clock
    secure_cookies: bool
    staff: Staff
    console: Console
    dead_letters: DeadLetters
    preferences: Any = None  # web.preferences.PreferencesPublisher, with Kafka

    def close(self) -> None:
        if self.preferences is not None:
            self.preferences.close()
        self.cabinet.close()
        self.store.close()
        self.runtime.close()


def open_store(settings: Settings) -> WebStore:
    store = WebStore(settings.database)
    store.create_tables()
    return store


def sms_gateway(settings: Settings, store: WebStore) -> SmsGateway:
    if settings.web.sms_gateway_url:
        return HttpGateway(settings.web.sms_gateway_url, settings.web.sms_gateway_token)
    return DatabaseOutbox(store)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    sms: SmsGateway | None = None,
    secure_cookies: bool | None = None,
) -> FastAPI:
    """`secure_cookies` None: from the settings. Secure cookies and HSTS
    unless ACCRUAL_INSECURE_COOKIES=1 (plain-http development): the
    application is reached over https, directly or through a proxy that
    ends TLS (docs/security.md), whatever address it listens on."""
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()
    runtime = Runtime(settings)
    store = open_store(settings)
    auth = Auth(store, clock, sms or sms_gateway(settings, store), settings.web.terms_version)
    cabinet = Cabinet(
        runtime, clock, load_catalog(settings.web.catalog_file), load_offers(settings.web.offers_file)
    )
    secure = (not settings.web.insecure_cookies) if secure_cookies is None else secure_cookies
    console = Console(runtime, cabinet, store, clock, settings.web.adjustment_approval_above)
    context = Context(settings, runtime, store, auth, cabinet, clock, secure, Staff(store, clock), console,
                      DeadLetters(cabinet, clock))

    @asynccontextmanager
    async def lifespan(served: FastAPI):
        kafka = served.state.kafka
        if kafka is not None:  # the members' SMS choices go to the notifier's topic, while the app serves
            from web.dashboard_worker import streams_names
            from web.preferences import PreferencesPublisher

            context.preferences = PreferencesPublisher(
                store, kafka.bootstrap, streams_names(kafka).member_preferences).start()
        yield
        context.close()

    app = FastAPI(
        lifespan=lifespan,
        title="МТС Бонус — личный кабинет (accrual)",
        version="1",
        description="The personal account's JSON API. Members authenticate with `Authorization: Bearer <token>` "
                    "from /api/v1/auth/*; shop tills with their store key.",
        # No Swagger UI: it loads its script from a public CDN, on the origin
        # of the members' sessions. /openapi.json describes the API for tools.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    from web.dashboard_worker import ThroughputSampler, kafka_settings

    app.state.kafka = kafka_settings()  # None: the engine runs without Kafka here (no worker lag to show)
    app.state.throughput = ThroughputSampler()
    app.add_middleware(Guard, https=secure)
    from web import api_member, api_ops, api_pos, api_signin, pages, pages_member, pages_ops, pages_signin, probes

    for module in (api_signin, api_member, api_pos, api_ops, pages_signin, pages_member, pages_ops, probes):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(resources.files("web") / "static")), name="static")
    pages.install_error_pages(app)
    pages_ops.install(app)

    return app


def context_of(request: Request) -> Context:
    return request.app.state.context


def _peer(request: Request) -> Any:
    try:
        return ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return None


def from_trusted_proxy(request: Request) -> bool:
    peer = _peer(request)
    proxies = context_of(request).settings.web.trusted_proxies
    return peer is not None and any(peer in network for network in proxies)


def client_address(request: Request) -> str:
    """The key of the subscriber's address for rate limits (an IPv6 client
    by its /64): the TCP peer, or the last hop of X-Forwarded-For when the
    peer is a trusted gateway."""
    if from_trusted_proxy(request):
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if forwarded:
            return client_key(forwarded)
    return client_key(request.client.host if request.client else "unknown")


def network_msisdn(request: Request) -> str | None:
    """The number the operator's gateway vouches for: only from a trusted
    address, only a well-formed msisdn; anything else is ignored."""
    if not from_trusted_proxy(request):
        return None
    value = request.headers.get(MSISDN_HEADER, "").strip()
    return value if is_msisdn(value) else None
