"""Card transactions (balance inquiry, purchase, void, settlement): the steps of
their pipelines, in the order of checks of WIRE.md section 8; the financial
steps every family shares (context, repeats, currency, batch, permit, amount,
risk); their recording in gateway.acquiring.recording."""

from __future__ import annotations

from gateway import metrics
from gateway.acquiring import risk, store
from gateway.acquiring.context import Answered, Services, Transaction
from gateway.acquiring.operations import Balance, Purchase, Settlement, TxnKey, Void
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import content_hash, finish, risk_check
from gateway.acquiring.steps import Step, check_not_frozen, require
from gateway.domain.registry import ACTIVE
from gateway.domain.vocabulary import Kind, Status
from ledger.postings import Transfer, basis_points_fen
from protocol import tlv
from protocol.crypto import PinBlockError
from protocol.messages import Message

CURRENCY_CNY = "156"
_ORIGINAL_TXN_MIN_DIGITS = 16  # 61: batch n6, STAN n6, date n4


# -- format (30): fields a request of its type must carry ----------------------


def card_pan(request: Message) -> str:
    """The PAN from field 2 or track 2; both present and different: 30."""
    track_pan = request.track2.split("D", 1)[0] if request.track2 else None
    if request.pan and track_pan and request.pan != track_pan:
        raise Decline(Outcome.FORMAT_ERROR, "PAN in field 2 and track 2 differ")
    pan = request.pan or track_pan
    if not pan or not 13 <= len(pan) <= 19:
        raise Decline(Outcome.FORMAT_ERROR, "no PAN of 13 to 19 digits")
    return pan


async def check_card_request_format(txn: Transaction, svc: Services) -> None:
    request = txn.request
    require(request, "processing_code", "entry_mode", "condition_code")
    txn.pan = card_pan(request)
    if request.has("pin_block") != request.has("security_control"):
        raise Decline(Outcome.FORMAT_ERROR, "PIN block and security control go together")
    if txn.kind is Kind.VOID:
        require(request, "rrn", "original_txn")
        if len(request.original_txn) < _ORIGINAL_TXN_MIN_DIGITS:
            raise Decline(Outcome.FORMAT_ERROR, "original_txn shorter than 16 digits")


SETTLEMENT_TOTALS_DIGITS = 30  # debit n12, count n3, credit n12, count n3


SETTLEMENT_TOTALS_LENGTHS = (SETTLEMENT_TOTALS_DIGITS, 2 * SETTLEMENT_TOTALS_DIGITS + 2)  # version 1, 9.6


async def check_settlement_format(txn: Transaction, svc: Services) -> None:
    """Field 48 is 30 digits (version 1) or 62 (domestic and foreign halves, WIRE.md 9.6); else 30."""
    totals = txn.request.settlement_totals
    if totals is None or len(totals) not in SETTLEMENT_TOTALS_LENGTHS:
        raise Decline(Outcome.FORMAT_ERROR, "field 48 needs 30 or 62 digits of batch totals")


# -- who, keys, MAC, repeats -----------------------------------------------------


# Requests whose checks need only their terminal and card: their context comes
# from the cache when both are in it (gateway.acquiring.context_cache; with the
# risk rules on, the recording decides the rules that need history).
CACHED_KINDS = frozenset({Kind.BALANCE, Kind.PURCHASE})


async def load_context(txn: Transaction, svc: Services) -> None:
    """Everything the checks need, in one query (or from the cache); the terminal is registered (97)."""
    request = txn.request
    txn.key = TxnKey(request.terminal_id, request.batch, request.stan, request.mti)
    void_ref = None
    if txn.kind is Kind.VOID:
        void_ref = store.VoidReference(request.rrn, request.original_batch, request.original_stan,
                                       request.original_date)
    txn.pan_hash = svc.hsm.pan_hash(txn.pan) if txn.pan else None
    cacheable = txn.kind in CACHED_KINDS
    if cacheable and txn.cache_allowed:
        txn.context = svc.contexts.context(txn.key.tid, txn.pan_hash)
        if txn.context is not None:
            metrics.labelled(metrics.CONTEXT_CACHE, result="hit").inc()
    if txn.context is None:
        biller_code = txn.bill_fields.get(tlv.BILLER) if txn.bill_fields else None
        txn.context = await svc.store.load_context(txn.key, txn.pan_hash, void_ref, biller_code, txn.now.date(),
                                                   svc.settings.risk_enabled)
        if txn.context is None:
            raise Decline(Outcome.TERMINAL_UNKNOWN, "terminal not registered")
        if cacheable:
            svc.contexts.keep(txn.context, txn.pan_hash)
    txn.terminal = txn.context.terminal


async def check_repeat(txn: Transaction, svc: Services) -> None:
    """A repeat gets the stored answer, once it is on the synchronous standby;
    the same key with other content gets 94."""
    stored = txn.ctx.stored
    if stored is not None:
        if stored.content_hash != content_hash(txn.request):
            raise Decline(Outcome.DUPLICATE_DIFFERENT_CONTENT, "same key, different content")
        txn.recording_sent = True  # from here an error leaves the outcome unknown: no answer
        await svc.store.confirm_replicated()
        txn.answer = stored.response
        raise Answered
    txn.recordable = True


async def check_currency(txn: Transaction, svc: Services) -> None:
    if txn.request.currency != CURRENCY_CNY:
        raise Decline(Outcome.CURRENCY_NOT_SUPPORTED, f"currency {txn.request.currency}")


async def check_batch_open(txn: Transaction, svc: Services) -> None:
    """Requests in a settled batch, reversals included, get 12."""
    if txn.ctx.batch_settled:
        raise Decline(Outcome.BATCH_SETTLED, f"batch {txn.key.batch} is settled")


def check_permitted(permit: str) -> Step:
    async def check_permitted(txn: Transaction, svc: Services) -> None:
        """The terminal may do this, and terminal, merchant and agent are active (58)."""
        if permit not in txn.terminal_record.permit:
            raise Decline(Outcome.NOT_PERMITTED, f"{permit} not permitted on this terminal")
        await check_not_frozen(txn, svc)

    return check_permitted


# -- originals ---------------------------------------------------------------------


async def check_void_original(txn: Transaction, svc: Services) -> None:
    """The purchase exists on this terminal, in this batch, approved, with this
    card (25), for this amount (64)."""
    original, request, card = txn.ctx.original, txn.request, txn.ctx.card
    if original is None or original.batch != request.batch:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "no such purchase in this batch")
    if original.status != Status.APPROVED:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, f"purchase already {original.status}")
    if card is None or card.id != original.card_id:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "not the purchase's card")
    if request.amount_fen != original.amount_fen:
        raise Decline(Outcome.AMOUNT_MISMATCH, "amount is not the purchase's")


# -- card --------------------------------------------------------------------------


def check_card(*, status: bool) -> Step:
    async def check_card(txn: Transaction, svc: Services) -> None:
        """Known (14); active (62) and not expired (54) unless a void; PIN not blocked (75)."""
        card = txn.ctx.card
        if card is None:
            raise Decline(Outcome.CARD_UNKNOWN, "unknown card")
        if status:
            if card.status != ACTIVE:
                raise Decline(Outcome.CARD_RESTRICTED, "card frozen")
            if card.expiry < txn.now.strftime("%y%m"):
                raise Decline(Outcome.CARD_EXPIRED, f"card expired {card.expiry}")
        if card.pin_blocked:
            raise Decline(Outcome.PIN_TRIES_EXCEEDED, "PIN blocked")

    return check_card


async def verify_pin(txn: Transaction, svc: Services) -> None:
    """PIN present (55), well formed (99), right (55; the third wrong in a row is 75)."""
    request, card = txn.request, txn.ctx.card
    if request.pin_block is None or request.entry_mode.endswith("2"):
        raise Decline(Outcome.PIN_INCORRECT, "no PIN")
    try:
        right = svc.hsm.verify_pin(txn.terminal_record.pik_lmk, request.pin_block, txn.pan, card.pvv)
    except PinBlockError as exc:
        raise Decline(Outcome.PIN_FORMAT_ERROR, str(exc)) from None
    # A right PIN restarts the count of wrong ones: there is nothing to
    # record when the count is 0 (the card as read by this request's context).
    txn.pin_result = "wrong" if not right else "ok" if card.pin_tries else None
    if not right:
        raise Decline(Outcome.PIN_INCORRECT, "wrong PIN")


async def check_amount(txn: Transaction, svc: Services) -> None:
    if not txn.request.amount_fen:
        raise Decline(Outcome.AMOUNT_INVALID, "amount zero or absent")


async def check_risk(txn: Transaction, svc: Services) -> None:
    """The risk rules that need no lock (61, 59); the counted ones (61, 65)
    are handed to the database with the posting (``risk_check``). On cached
    records (no history) travel and spike are too (``risk_recheck``)."""
    if not svc.settings.risk_enabled:
        return
    ctx, request = txn.ctx, txn.request
    txn.risk_limits = risk.effective_limits(svc.risk_defaults, ctx.merchant_limits, ctx.terminal_limits)
    risk.check_amount(txn.kind, request.amount_fen, txn.risk_limits)
    fields = txn.bill_fields
    if fields is None and request.bill_data is not None:
        try:  # 59 of a card request is for us only if it is our TLV (it may carry a terminal's own data)
            fields = tlv.decode(request.bill_data)
        except tlv.TlvError:
            fields = None
    reported = risk.reported_position(fields)
    risk.check_location(reported, ctx.terminal.position, txn.risk_limits)
    txn.position = reported or ctx.terminal.position
    if ctx.cached:  # no history: the recording decides travel and spike (recording.risk_recheck)
        return
    if ctx.card is not None and txn.pan is not None:
        risk.check_travel(txn.position, ctx.history, txn.risk_limits)
    if txn.kind in risk.COUNTED_KINDS:
        risk.check_spike(ctx.history, txn.risk_limits)


# -- recording ---------------------------------------------------------------------


async def finish_balance(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, Balance, card_account_id=txn.ctx.card.account_id, position=txn.position)


async def finish_purchase(txn: Transaction, svc: Services) -> None:
    terminal, card, amount = txn.terminal_record, txn.ctx.card, txn.request.amount_fen
    fee = basis_points_fen(amount, terminal.mdr_bp)
    transfers = [Transfer(card.account_id, terminal.merchant_account_id, amount - fee, "purchase")]
    if fee:
        transfers.append(Transfer(card.account_id, svc.fee_account_id, fee, "purchase_fee"))
    await finish(txn, svc, Purchase, transfers=tuple(t for t in transfers if t.amount_fen > 0),
                 risk=risk_check(txn), position=txn.position)


async def finish_void(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, Void, original_id=txn.ctx.original.id)


async def finish_settlement(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, Settlement, terminal_totals=txn.request.settlement_totals)
