"""Batch upload (批上送, 0320; WIRE.md 9.4, 9.9): after a settlement out of
balance, the terminal uploads what it holds for the batch: records (60.3 =
201), copies of its advices (000), IC TC records (203 to 206), then the end
message (202 or 207). None carries a MAC or needs keys, none moves money, and
each is accepted for any batch of the terminal, settled or not. What the
terminal holds is kept per (terminal, batch, record STAN), the first one
winning (so an upload repeated is kept once); the end compares it with the
gateway's approvals and keeps the differences for ``posgw batch diff``."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.acquiring.card_flows import card_pan
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.steps import require
from gateway.domain.cards import mask_pan

RECORDS_MAX = 8
RECORD_DIGITS = 40  # card organisation n2, STAN n6, PAN n20, amount n12
END_COUNT_DIGITS_MAX = 4
ADVICE_KINDS_BY_TXN_TYPE = {"25": "refund", "24": "completion_advice"}

_INSERT_RECORD = """
INSERT INTO gw_upload_records (tid, batch, stan, kind, card_org, pan_hash, pan_masked, amount_fen, found)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tid, batch, stan) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One record of a 60.3 = 201 message's field 48."""

    card_org: str
    stan: str
    pan: str
    amount_fen: int


def parse_records(field_48: str | None) -> list[UploadRecord]:
    """Field 48 of a records message: NN (01 to 08) then NN records of 40 digits (else 30)."""
    if field_48 is None or len(field_48) < 2 or not field_48.isdigit():
        raise Decline(Outcome.FORMAT_ERROR, "field 48 of a batch upload needs NN and its records")
    count = int(field_48[:2])
    if not 1 <= count <= RECORDS_MAX or len(field_48) != 2 + count * RECORD_DIGITS:
        raise Decline(Outcome.FORMAT_ERROR, f"field 48 does not hold {count} records of 40 digits")
    records = []
    for n in range(count):
        record = field_48[2 + n * RECORD_DIGITS:2 + (n + 1) * RECORD_DIGITS]
        pan = record[8:28].lstrip("0")
        records.append(UploadRecord(record[:2], record[2:8], pan, int(record[28:])))
    return records


async def keep_records(txn: Transaction, svc: Services) -> None:
    """60.3 = 201: each record kept as 'the terminal holds it as approved'."""
    request = txn.request
    records = parse_records(request.settlement_totals)
    await svc.pool.execute(
        """INSERT INTO gw_upload_records (tid, batch, stan, kind, card_org, pan_hash, pan_masked, amount_fen)
           SELECT $1, $2, r.stan, 'record', r.card_org, r.pan_hash, r.pan_masked, r.amount_fen
             FROM unnest($3::text[], $4::text[], $5::bytea[], $6::text[], $7::bigint[]) WITH ORDINALITY
                  AS r (stan, card_org, pan_hash, pan_masked, amount_fen, n)
            ORDER BY r.n
           ON CONFLICT (tid, batch, stan) DO NOTHING""",
        request.terminal_id, request.batch, [r.stan for r in records], [r.card_org for r in records],
        [svc.hsm.pan_hash(r.pan) if r.pan else None for r in records],
        [mask_pan(r.pan) if r.pan else None for r in records], [r.amount_fen for r in records])


async def keep_advice_copy(txn: Transaction, svc: Services) -> None:
    """60.3 = 000: a copy of an advice, matched with the 0220 of the same terminal, batch,
    11, 3, 60.1, PAN and 4; found or not, 00, and kept."""
    request = txn.request
    require(request, "processing_code", "amount")
    pan = card_pan(request)
    pan_hash = svc.hsm.pan_hash(pan)
    found = await svc.pool.fetchval(
        """SELECT EXISTS (SELECT 1 FROM gw_transactions t JOIN cards c ON c.id = t.card_id
                           WHERE t.tid = $1 AND t.batch = $2 AND t.stan = $3 AND t.mti_class = '0220'
                             AND t.processing_code = $4 AND t.kind = $5 AND c.pan_hash = $6 AND t.amount_fen = $7
                             AND t.response_code = '00' AND t.status <> 'reversed')""",
        request.terminal_id, request.batch, request.stan, request.processing_code,
        ADVICE_KINDS_BY_TXN_TYPE.get(request.txn_type or "", ""), pan_hash, request.amount_fen)
    await svc.pool.execute(_INSERT_RECORD, request.terminal_id, request.batch, request.stan, "advice", None,
                           pan_hash, mask_pan(pan), request.amount_fen, found)


async def keep_ic_record(txn: Transaction, svc: Services) -> None:
    """60.3 = 203 to 206: an IC TC record (11 and 4 needed), kept with the batch."""
    request = txn.request
    require(request, "amount")
    pan = request.pan
    await svc.pool.execute(_INSERT_RECORD, request.terminal_id, request.batch, request.stan, "ic", None,
                           svc.hsm.pan_hash(pan) if pan else None, mask_pan(pan) if pan else None,
                           request.amount_fen, None)


async def end_upload(txn: Transaction, svc: Services) -> None:
    """60.3 = 202 or 207: 48 the number of records sent (1 to 4 digits, else 30); the
    answer's 48 the number of distinct records received, 4 digits; the differences kept."""
    request = txn.request
    sent = request.settlement_totals
    if sent is None or not 1 <= len(sent) <= END_COUNT_DIGITS_MAX or not sent.isdigit():
        raise Decline(Outcome.FORMAT_ERROR, "field 48 of the end needs the count of records, 1 to 4 digits")
    received = await svc.pool.fetchval(
        """WITH ended AS (
               INSERT INTO gw_upload_ends (tid, batch, sent_count, received_count, differences)
               SELECT $1, $2, $3, count(*), gw_batch_differences($1, $2)
                 FROM gw_upload_records WHERE tid = $1 AND batch = $2
               ON CONFLICT (tid, batch) DO UPDATE
                  SET sent_count = excluded.sent_count, received_count = excluded.received_count,
                      differences = excluded.differences, ended_at = now()
               RETURNING received_count)
           SELECT received_count FROM ended""", request.terminal_id, request.batch, int(sent))
    txn.reply["settlement_totals"] = f"{(received or 0) % 10 ** END_COUNT_DIGITS_MAX:04d}"
