"""From a frame to the bytes of its response: decode, route, run the steps,
build the response, MAC it, frame it; then log and count it, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway import metrics
from gateway.acquiring import counter_flows, ic_flows
from gateway.acquiring.context import Answered, Services, StaleContext, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import record_decline, response_fields
from gateway.acquiring.router import FINANCIAL_MTIS, FINANCIAL_ROUTES, KNOWN_MTIS, Route, route
from gateway.acquiring.steps import Step
from gateway.domain import ic
from gateway.domain.cards import mask_pan
from gateway.domain.vocabulary import Kind
from protocol.codes import ResponseCode
from protocol.framing import Frame, encode_frame
from protocol.messages import ECHOED_ALWAYS, ECHOED_WHEN_PRESENT, FormatError, Message, decode_message

log = structlog.get_logger("posgw.txn")

_MANDATORY_ALWAYS = ("stan", "terminal_id", "merchant_id", "txn_data")
_MANDATORY_FINANCIAL = ("currency",)
_TXN_DATA_MIN_DIGITS = 11  # 60.1, 60.2, 60.3
# Processing codes as metric labels: those the router routes; others are "other".
_ROUTED_PROCESSING_CODES = frozenset(code for _, code, _ in FINANCIAL_ROUTES)


def response_mti(mti: str) -> str:
    return f"{mti[:2]}{int(mti[2]) | 1}{mti[3]}"


def processing_code_label(code: str | None) -> str:
    """A bounded metric label: a routed processing code, ``other``, or ``none`` when absent."""
    if code is None:
        return "none"
    return code if code in _ROUTED_PROCESSING_CODES else "other"


def check_mandatory(request: Message) -> None:
    """A decoded request lacking a field every request of its class carries is a format error."""
    names = _MANDATORY_ALWAYS + (_MANDATORY_FINANCIAL if request.mti in FINANCIAL_MTIS else ())
    for name in names:
        if not request.has(name):
            raise Decline(Outcome.FORMAT_ERROR, f"{name} missing")
    if len(request.txn_data) < _TXN_DATA_MIN_DIGITS:
        raise Decline(Outcome.FORMAT_ERROR, "txn_data shorter than 11 digits")


class Processor:
    def __init__(self, services: Services, router: Callable[[Message], Route] = route, *,
                 list_prompts: bool = True) -> None:
        """``list_prompts`` False: the header digit is only ever 3 or 0 (``--wire-only``: no database)."""
        self.svc = services
        self.route = router
        self.settings = services.settings
        self.prompts = ic_flows.PromptStates(services.settings.context_cache_entries) if list_prompts else None

    async def _run(self, txn: Transaction) -> tuple[Outcome, str]:
        """The request's pipeline: its outcome, and why."""
        request = txn.request
        outcome, reason = Outcome.APPROVED, ""
        try:
            try:
                check_mandatory(request)
                selected = self.route(request)
                txn.kind = selected.kind
                await self._steps(txn, selected.steps)
            except Decline as decline:
                outcome, reason = decline.outcome, decline.reason
                if txn.recordable and outcome.storable:
                    await record_decline(txn, self.svc, decline)
        except Answered:
            pass
        except Decline as decline:  # recording found the key taken by other content
            outcome, reason = decline.outcome, decline.reason
        except Exception as exc:  # anything unexpected: 96, and the connection lives on
            outcome, reason = Outcome.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}"
            txn.answer = None
            log.error("txn_error", tid=request.terminal_id, stan=request.stan, error=reason)
        return outcome, reason

    async def _steps(self, txn: Transaction, steps: tuple[Step, ...]) -> None:
        """Run the steps; once more on a fresh read when its context came from
        the cache and it was declined or the cache was stale (gateway.acquiring.context_cache)."""
        try:
            for step in steps:
                await step(txn, self.svc)
        except (Decline, StaleContext) as exc:
            if txn.context is None or not txn.context.cached:
                raise
            metrics.labelled(metrics.CONTEXT_CACHE, result="stale" if isinstance(exc, StaleContext) else "declined"
                             ).inc()
            self.svc.contexts.forget(txn.key.tid, txn.pan_hash)
            txn.start_over()
            for step in steps:
                await step(txn, self.svc)

    async def handle(self, frame: Frame) -> bytes | None:
        """The response's bytes, or None when it must not be answered (a
        request that timed out after its outcome left for the database)."""
        started = time.perf_counter()
        now = self.settings.now().astimezone(self.settings.tz)  # clock_offset_s included (CLI.md, Time)
        try:
            request = decode_message(frame.message)
        except FormatError as exc:
            partial = Message(frame.message[:2].hex())
            for name in ECHOED_ALWAYS:
                setattr(partial, name, exc.readable(name))
            txn = Transaction(frame, partial, now, kind=Kind.UNDECODABLE)
            return await self._finish(txn, response_mti(partial.mti), Outcome.FORMAT_ERROR, str(exc), started)

        txn = Transaction(frame, request, now)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                outcome, reason = await self._run(txn)
        except TimeoutError:
            outcome, reason = Outcome.SYSTEM_ERROR, "request timeout"
            txn.answer = None
        if outcome is Outcome.SYSTEM_ERROR and txn.recording_sent and txn.answer is None:
            # It failed after its outcome left for the database (a timeout, the
            # database gone mid-commit): its money may have moved. No answer, so
            # that the terminal reverses it (WIRE.md 3), rather than a 96 it
            # would take for a decline.
            log.warning("txn_unanswered", tid=request.terminal_id, stan=request.stan, kind=txn.kind, reason=reason)
            metrics.UNANSWERED.inc()
            return None
        return await self._finish(txn, response_mti(request.mti), outcome, reason, started)

    async def _finish(self, txn: Transaction, mti: str, outcome: Outcome, reason: str, started: float) -> bytes:
        request, code = txn.request, outcome.response_code
        response = Message(mti)
        for name in ECHOED_ALWAYS + ECHOED_WHEN_PRESENT:
            value = getattr(request, name)
            if value is not None:
                setattr(response, name, value)
        response.acquirer_id = self.settings.acquirer_id
        if txn.answer is not None:  # decided and recorded: rrn, times, code and extras as stored
            code, fields = response_fields(counter_flows.reveal_voucher_pin(txn.answer, self.svc.hsm))
            for name, value in fields.items():
                setattr(response, name, value)
        else:
            response.local_time = txn.now.strftime("%H%M%S")
            response.local_date = txn.now.strftime("%m%d")
            try:
                response.rrn = await self.svc.rrns.next()
            except Exception as exc:  # the database is down: answer 96 with a process-local number
                response.rrn = f"{int(time.time() * 1000) % 10**12:012d}"
                code = ResponseCode.SYSTEM_MALFUNCTION
                reason = reason or f"no RRN: {type(exc).__name__}"
            response.response_code = code.value
            if code is ResponseCode.APPROVED:
                for name, value in txn.reply.items():
                    setattr(response, name, value)
        terminal = txn.terminal
        if txn.mac_verified and terminal is not None:
            body = response.encode_with_mac(
                lambda data: self.svc.hsm.mac(terminal.mak_lmk, terminal.mac_algorithm, data)
            )
        else:
            body = response.encode()
        # After the steps ran (an end message's answer already says 0): WIRE.md 9.5, 9.9.
        if self.prompts is not None:
            digit = await ic_flows.processing_requirement(txn, self.svc, code, self.prompts)
        else:
            digit = ic_flows.SIGN_ON_DIGIT if code.asks_sign_on else ic.PROMPT_NONE
        header = txn.frame.header.with_processing_requirement(digit)
        latency_s = time.perf_counter() - started
        self._record(txn, code, reason, latency_s)
        return encode_frame(txn.frame.tpdu.swapped(), header, body)

    def _record(self, txn: Transaction, code: ResponseCode, reason: str, latency_s: float) -> None:
        """The transaction's metrics and its one log line (never a full PAN, PIN block, track or key)."""
        request = txn.request
        mti = request.mti if request.mti in KNOWN_MTIS else "other"
        labelled = metrics.labelled
        labelled(metrics.REQUESTS, mti=mti, kind=txn.kind, response_code=code.value).inc()
        labelled(metrics.REQUESTS_BY_CODE, mti=mti, processing_code=processing_code_label(request.processing_code),
                 response_code=code.value).inc()
        labelled(metrics.LATENCY, kind=txn.kind).observe(latency_s)
        if txn.kind is Kind.SIGN_ON:
            labelled(metrics.SIGN_ONS, response_code=code.value).inc()
        if txn.risk_rule:
            labelled(metrics.RISK_DECLINES, rule=txn.risk_rule, response_code=code.value).inc()
        log.info(
            "txn",
            tid=request.terminal_id,
            stan=request.stan,
            mti=request.mti,
            kind=txn.kind,
            processing_code=request.processing_code,
            pan=mask_pan(pan) if (pan := txn.pan or request.pan) else None,
            amount_fen=request.amount_fen,
            rc=code.value,
            reason=reason or None,
            latency_ms=round(latency_s * 1000, 3),
        )
