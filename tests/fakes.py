"""Test doubles for ports: a market whose quotes the test sets, and brokers that fail on purpose.

These stand in for external systems only (market data, broker faults); our own services and the
simulated broker are always the real code.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.values import OccSymbol, OptionType
from ops_pipeline.errors import BrokerTemporaryError
from ops_pipeline.ports import OrderRequest, OrderResult


class FakeMarket:
    """Quotes set by the test; the same quote whatever the time."""

    def __init__(self, quotes: list[OptionQuote] | None = None, prices: dict[str, Decimal] | None = None) -> None:
        self.quotes = {str(q.symbol): q for q in quotes or []}
        self.prices = prices or {}

    def set_quote(self, quote: OptionQuote) -> None:
        self.quotes[str(quote.symbol)] = quote

    def underlying_price(self, ticker: str, now: dt.datetime) -> Decimal | None:
        return self.prices.get(ticker)

    def option_chain(self, ticker: str, now: dt.datetime, *, option_type: OptionType, min_dte: int,
                     max_dte: int) -> list[OptionQuote]:
        return [q for q in self.quotes.values() if q.symbol.underlying == ticker and q.symbol.option_type is option_type]

    def option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None:
        return self.quotes.get(str(symbol))


class TimeoutAfterSubmit:
    """Wraps a broker: the order reaches it, then the answer is lost (like a 504 or a timeout)."""

    def __init__(self, inner) -> None:  # noqa: ANN001 - any Broker
        self.inner = inner
        self.fail_next_submit = True

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate reads
        return getattr(self.inner, name)

    def submit_order(self, request: OrderRequest) -> OrderResult:
        result = self.inner.submit_order(request)
        if self.fail_next_submit:
            self.fail_next_submit = False
            raise BrokerTemporaryError("gateway timeout after the order was taken")
        return result


class Faults:
    """Faults a test arms on the paper exchange's HTTP layer (see :func:`add_faults`)."""

    def __init__(self) -> None:
        self.status_after_order: int | None = None  # the order is taken, then this status is answered
        self.rate_limited: int = 0  # the next N requests answer 429 unprocessed
        self.hold_after_order = None  # a threading.Event: the order is taken, the answer waits for it
        self.order_posts = 0


def add_faults(app, faults: Faults) -> None:  # noqa: ANN001 - a FastAPI app
    import anyio
    from fastapi.responses import JSONResponse, Response

    @app.middleware("http")
    async def inject(request, call_next):  # noqa: ANN001, ANN202
        if faults.rate_limited > 0:
            faults.rate_limited -= 1
            return JSONResponse({"code": 42910000, "message": "rate limit exceeded"}, status_code=429,
                                headers={"Retry-After": "2"})
        response = await call_next(request)
        if request.method == "POST" and request.url.path == "/v2/orders":
            faults.order_posts += 1
            if faults.status_after_order is not None:
                status, faults.status_after_order = faults.status_after_order, None
                return Response(status_code=status, content=b"upstream timed out")
            if faults.hold_after_order is not None:
                hold, faults.hold_after_order = faults.hold_after_order, None
                await anyio.to_thread.run_sync(hold.wait, abandon_on_cancel=True)
        return response
