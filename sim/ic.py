"""The chip terminal's side of WIRE.md 9.5: downloading the CAPK and AID lists
(query until the list ends, download each entry, end), the status upload, and
following the header's processing-requirement digit after sign-on.

Functions over ``sim.terminal.Terminal``; protocol only, never the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import emv, ic_lists
from protocol.framing import PROCESSING_DIGIT_INDEX
from protocol.messages import Message
from sim.terminal import Response, Terminal, build_request

CAPK, AID = "capk", "aid"
_CODES = {  # list -> (query, download, end) 60.3
    CAPK: (ic_lists.CAPK_QUERY, ic_lists.CAPK_DOWNLOAD, ic_lists.CAPK_END),
    AID: (ic_lists.AID_QUERY, ic_lists.AID_DOWNLOAD, ic_lists.AID_END),
}
QUERY_MTI, DOWNLOAD_MTI = "0820", "0800"
SIGN_ON, DOWNLOAD_CAPKS, DOWNLOAD_AIDS, NOTHING = "3", "4", "5", "0"
FOLLOW_STEPS_MAX = 6  # prompts followed after one sign-on, so that a host that keeps prompting cannot loop us


class IcExchangeError(Exception):
    """The host refused a step of the exchange (not 00: ``response_code``) or answered a
    malformed 62, or kept prompting (``response_code`` None)."""

    def __init__(self, message: str, response_code: str | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code


def prompt_digit(response: Response) -> str:
    """The header's processing-requirement digit of an answer."""
    return response.header.hex()[PROCESSING_DIGIT_INDEX]


def _request(terminal: Terminal, mti: str, network_code: str, key_data: bytes | None) -> Message:
    return build_request(mti, stan=terminal.next_stan(), terminal_id=terminal.tid, merchant_id=terminal.mid,
                         txn_data=f"00{terminal.batch:06d}{network_code}", key_data=key_data)


async def exchange(terminal: Terminal, mti: str, network_code: str, key_data: bytes | None = None) -> Response:
    """One message of the exchange (no MAC); anything but 00 raises ``IcExchangeError``."""
    response = await terminal.exchange(_request(terminal, mti, network_code, key_data), mac=False)
    if response.response_code != "00":
        raise IcExchangeError(f"{mti} {network_code} answered {response.response_code}", response.response_code)
    return response


@dataclass
class ListDownload:
    """What one list's exchange brought: each record, and how many messages it took."""

    which: str
    records: list[dict[str, bytes]] = field(default_factory=list)
    queries: int = 0
    downloads: int = 0
    last: Response | None = None  # the end's answer: its header digit says what is next

    def summary(self) -> list[dict[str, Any]]:
        """JSON-safe: a CAPK's RID, index, expiry, modulus size and check sum; an AID and its TLVs."""
        if self.which == CAPK:
            return [{"rid": r["9F06"].hex().upper(), "index": r["9F22"].hex().upper(),
                     "expiry": r["DF05"].decode("ascii", "replace"), "modulus_bits": len(r["DF02"]) * 8,
                     "checksum": r["DF03"].hex().upper()} for r in self.records]
        return [{"aid": r["9F06"].hex().upper(),
                 "tlv": b"".join(emv.encode_one(tag, value) for tag, value in r.items()
                                 if tag != ic_lists.TAG_AID).hex().upper()} for r in self.records]


async def query_list(terminal: Terminal, which: str) -> tuple[list[dict[str, bytes]], int]:
    """Query from NN = 00 until the host says the list ends: the entries and the number of queries."""
    code = _CODES[which][0]
    entries: list[dict[str, bytes]] = []
    queries = 0
    while True:
        response = await exchange(terminal, QUERY_MTI, code, ic_lists.encode_query(len(entries)))
        queries += 1
        try:
            answer = ic_lists.parse_query_answer(response.message.key_data)
        except ic_lists.IcListError as exc:
            raise IcExchangeError(f"query answer: {exc}") from None
        entries += answer.entries
        if not answer.more:
            return entries, queries
        if len(entries) >= ic_lists.ENTRIES_MAX:
            raise IcExchangeError(f"the host says more follow after {len(entries)} entries")


async def download_entry(terminal: Terminal, which: str, entry: dict[str, bytes]) -> dict[str, bytes] | None:
    """One entry's whole record (a CAPK's check sum verified), or None when the host no longer has it."""
    if which == CAPK:
        key_data = ic_lists.encode_capk_download(entry[ic_lists.TAG_AID], entry[ic_lists.TAG_CAPK_INDEX][0])
    else:
        key_data = ic_lists.encode_aid_download(entry[ic_lists.TAG_AID])
    response = await exchange(terminal, DOWNLOAD_MTI, _CODES[which][1], key_data)
    try:
        record = ic_lists.parse_download_answer(response.message.key_data)
        if record is not None and which == CAPK:
            ic_lists.parse_capk_record(record)
    except ic_lists.IcListError as exc:
        raise IcExchangeError(f"download answer: {exc}") from None
    return record


async def download_list(terminal: Terminal, which: str) -> ListDownload:
    """The whole exchange for one list, as a terminal runs it: query, download each entry, end."""
    entries, queries = await query_list(terminal, which)
    result = ListDownload(which, queries=queries)
    for entry in entries:
        record = await download_entry(terminal, which, entry)
        result.downloads += 1
        if record is not None:
            result.records.append(record)
    result.last = await exchange(terminal, DOWNLOAD_MTI, _CODES[which][2])
    return result


async def ic_download(terminal: Terminal, lists: Sequence[str] = (CAPK, AID)) -> dict[str, ListDownload]:
    """``posgw-sim ic-download``: both lists (CAPKs first)."""
    return {which: await download_list(terminal, which) for which in lists}


async def upload_status(terminal: Terminal, status: dict[str, str]) -> Response:
    """Status upload (0820, 362): ``{"03": "1", "04": "0"}`` — tag → ``1`` working, ``0`` not."""
    return await exchange(terminal, QUERY_MTI, ic_lists.STATUS_UPLOAD, ic_lists.encode_status(status))


@dataclass
class FollowedPrompts:
    """What following the header digit did: the actions in order, and the lists downloaded."""

    actions: list[str] = field(default_factory=list)  # "signon", "capk", "aid"
    downloads: list[ListDownload] = field(default_factory=list)


async def sign_on_following_prompts(terminal: Terminal, *, network_code: str = "003",
                                    holding_nothing: bool = False) -> FollowedPrompts:
    """``posgw-sim signon --follow-prompts``: sign on, then do what each answer's header
    digit asks (3 sign on again, 4 download the CAPKs, 5 the AIDs) until it says 0.

    The host prompts only a terminal that has queried a list before (WIRE.md 9.9): a
    terminal ``holding_nothing`` (its first day) downloads both lists first, unprompted."""
    followed = FollowedPrompts(["signon"])
    response = await terminal.sign_on(network_code=network_code)
    if response.response_code != "00":
        raise IcExchangeError(f"sign-on answered {response.response_code}", response.response_code)
    if holding_nothing:
        for which in (CAPK, AID):
            followed.actions.append(which)
            download = await download_list(terminal, which)
            followed.downloads.append(download)
            assert download.last is not None
            response = download.last
    for _ in range(FOLLOW_STEPS_MAX):
        digit = prompt_digit(response)
        if digit == SIGN_ON:
            followed.actions.append("signon")
            response = await terminal.sign_on(network_code=network_code)
        elif digit in (DOWNLOAD_CAPKS, DOWNLOAD_AIDS):
            which = CAPK if digit == DOWNLOAD_CAPKS else AID
            followed.actions.append(which)
            download = await download_list(terminal, which)
            followed.downloads.append(download)
            assert download.last is not None
            response = download.last
        else:
            return followed
    raise IcExchangeError(f"still prompted after {FOLLOW_STEPS_MAX} steps: {followed.actions}")


def download_report(downloads: dict[str, ListDownload]) -> dict[str, Any]:
    """What ``posgw-sim ic-download --json`` prints: ``capks`` and ``aids`` as downloaded, and per list
    the ``queries`` and ``downloads`` it took; never anything secret (CAPKs are public keys)."""
    report: dict[str, Any] = {"capks": [], "aids": [], "queries": {}, "downloads": {}}
    for which, download in downloads.items():
        report["capks" if which == CAPK else "aids"] = download.summary()
        report["queries"][which] = download.queries
        report["downloads"][which] = download.downloads
    return report


def prompts_report(followed: FollowedPrompts) -> dict[str, Any]:
    """What ``posgw-sim signon --follow-prompts --json`` prints: the ``actions`` taken and what was downloaded."""
    return {"actions": followed.actions,
            "downloaded": {d.which: len(d.records) for d in followed.downloads}}
