"""The engine's vocabulary: the kinds of transaction a terminal's request can
be (the router's routes), what a recorded transaction's status may be, and
the one table of its changes (mirrored in the database: gw_status_transitions,
which gw_set_status consults, raising on any change not in it; a test holds
the two together). Their values are the names in logs, metrics labels and the
database (``gw_transactions.kind`` and ``status``)."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """A request's kind: the route it takes (gateway.acquiring.router)."""

    SIGN_ON = "signon"
    SIGN_OFF = "signoff"
    ECHO = "echo"
    BALANCE = "balance"
    PURCHASE = "purchase"
    VOID = "void"
    REVERSAL = "reversal"
    SETTLEMENT = "settlement"
    BILL_INQUIRY = "bill_inquiry"
    BILL_PAYMENT = "bill_payment"
    REFUND = "refund"  # WIRE.md 9.2
    PREAUTH = "preauth"  # WIRE.md 9.3, the pre-authorization family
    PREAUTH_CANCEL = "preauth_cancel"
    COMPLETION = "completion"
    COMPLETION_ADVICE = "completion_advice"
    COMPLETION_VOID = "completion_void"
    VOUCHER_SALE = "voucher_sale"  # WIRE.md 9.7, the agent's counter
    BILL_HISTORY = "bill_history"
    BATCH_UPLOAD = "batch_upload"  # WIRE.md 9.4: records, advice copies, IC records, the end
    UNKNOWN = "unknown"  # routed nowhere: answered 12
    UNDECODABLE = "undecodable"  # not a message: answered 30
    # Chip terminals (WIRE.md 9.5): list queries, downloads, download ends, the status upload.
    IC_CAPK_QUERY, IC_AID_QUERY = "ic_capk_query", "ic_aid_query"
    IC_CAPK_DOWNLOAD, IC_AID_DOWNLOAD = "ic_capk_download", "ic_aid_download"
    IC_CAPK_END, IC_AID_END = "ic_capk_end", "ic_aid_end"
    STATUS_UPLOAD = "status_upload"


class Status(StrEnum):
    """A recorded transaction's status (``gw_transactions.status``)."""

    APPROVED = "approved"
    DECLINED = "declined"
    VOIDED = "voided"  # a purchase, by an approved void
    REVERSED = "reversed"  # by an approved reversal
    # To come (WIRE.md 9.2, 9.3): a purchase or completion refunded; a
    # pre-authorization completed, cancelled, or left until its hold expired.
    REFUNDED = "refunded"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Every change of a recorded transaction's status: (from, to). A transaction
# is recorded approved or declined; a declined one never changes.
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset({
    (Status.APPROVED, Status.VOIDED),  # a void of a purchase (or, to come, of a completion)
    (Status.APPROVED, Status.REVERSED),  # a reversal of anything approved
    (Status.VOIDED, Status.APPROVED),  # the reversal of its void: the purchase stands again
    # To come:
    (Status.APPROVED, Status.REFUNDED),  # a refund
    (Status.REFUNDED, Status.APPROVED),  # the reversal of the refund
    (Status.APPROVED, Status.COMPLETED),  # a pre-authorization completed
    (Status.COMPLETED, Status.APPROVED),  # its completion voided or reversed: open again
    (Status.APPROVED, Status.CANCELLED),  # a pre-authorization cancelled
    (Status.CANCELLED, Status.APPROVED),  # the reversal of the cancel
    (Status.APPROVED, Status.EXPIRED),  # a pre-authorization's hold expired
})
