"""Who may do what in the back office: the roles, and the table of routes × roles.

- admin: everything, users included.
- operator: reads everything but users; operates (freeze and unfreeze
  terminals, merchants and agents, top up floats, change a terminal's permits,
  MAC, location and risk limits); manages no users.
- auditor: reads everything (users and the audit log included), changes nothing.
- agent: its own portal (its earnings and policy included), and only its own subtree
  (itself, its sub-agents, their merchants and terminals, their transactions), read only but
  for allocating, recalling and binding the terminals its subtree owns. The subtree
  is a condition of every query an agent's page runs (``gateway.backoffice.queries``),
  not a filter of the templates; a page of something outside it is 403.

``ROUTE_ROLES`` is the one table the app enforces and the tests walk.
"""

from __future__ import annotations

from dataclasses import dataclass

ADMIN, OPERATOR, AUDITOR, AGENT = "admin", "operator", "auditor", "agent"
EVERYONE = frozenset({ADMIN, OPERATOR, AUDITOR, AGENT})
STAFF = frozenset({ADMIN, OPERATOR, AUDITOR})
OPERATES = frozenset({ADMIN, OPERATOR})
USER_READERS = frozenset({ADMIN, AUDITOR})
ADMINS = frozenset({ADMIN})
AGENTS = frozenset({AGENT})

ROUTE_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/dashboard"): STAFF,
    ("GET", "/dashboard/figures"): STAFF,
    ("GET", "/terminals"): EVERYONE,
    ("GET", "/terminals.csv"): EVERYONE,
    ("GET", "/terminals/{tid}"): EVERYONE,
    ("POST", "/terminals/{tid}/status"): OPERATES,
    ("POST", "/terminals/{tid}/settings"): OPERATES,
    ("POST", "/terminals/{tid}/limits"): OPERATES,
    ("GET", "/map"): EVERYONE,
    ("GET", "/agents"): EVERYONE,
    ("GET", "/agents/{code}"): EVERYONE,
    ("POST", "/agents/{code}/topup"): OPERATES,
    ("POST", "/agents/{code}/status"): OPERATES,
    ("GET", "/portal"): AGENTS,
    ("GET", "/portal/statement.csv"): AGENTS,
    ("GET", "/transactions"): EVERYONE,
    ("GET", "/transactions.csv"): EVERYONE,
    ("GET", "/transactions/{txn_id:int}"): EVERYONE,
    ("GET", "/merchants"): EVERYONE,
    ("GET", "/merchants.csv"): EVERYONE,
    ("POST", "/merchants/{mid}/status"): OPERATES,
    ("GET", "/cards"): STAFF,
    ("GET", "/batches"): STAFF,
    ("GET", "/risk"): STAFF,
    ("GET", "/reports/daily"): STAFF,
    ("GET", "/reports/daily.csv"): STAFF,
    ("GET", "/reports/remittance.csv"): STAFF,
    ("GET", "/audit"): STAFF,
    ("GET", "/users"): USER_READERS,
    ("POST", "/users"): ADMINS,
    ("POST", "/users/{name}/disable"): ADMINS,
    ("POST", "/users/{name}/totp"): ADMINS,
    # the terminal inventory (gateway.backoffice.inventory): an agent user moves terminals inside its subtree
    ("GET", "/inventory"): EVERYONE,
    ("GET", "/inventory/{stock_tid}"): EVERYONE,
    ("POST", "/inventory/{stock_tid}/allocate"): OPERATES | AGENTS,
    ("POST", "/inventory/{stock_tid}/recall"): OPERATES | AGENTS,
    ("POST", "/inventory/{stock_tid}/bind"): OPERATES | AGENTS,
    # billers, store-and-forward, payouts, the agent network (biller_pages, money_pages, network_pages)
    ("GET", "/billers"): STAFF,
    ("GET", "/billers/{biller}"): STAFF,
    ("GET", "/billers/{biller}/bills.csv"): STAFF,
    ("GET", "/saf"): STAFF,
    ("POST", "/saf/{message_id:int}/retry"): OPERATES,
    ("GET", "/payouts"): STAFF,
    ("GET", "/payouts.csv"): STAFF,
    ("GET", "/agents/{code}/earnings"): EVERYONE,
    ("GET", "/agents/{code}/earnings.csv"): EVERYONE,
}
"""(method, path template) → the roles allowed; everyone else gets 403. Pages of a
single entity (``{tid}``, ``{code}``) also answer 403 to an agent outside its subtree."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the user's name, role, and for an agent user its agent."""

    name: str
    role: str
    agent: str | None

    @property
    def scope(self) -> str | None:
        """The agent whose subtree bounds every query, or None for staff (everything)."""
        return self.agent if self.role == AGENT else None

    def may(self, method: str, path: str) -> bool:
        return self.role in ROUTE_ROLES[(method, path)]

    @property
    def actor(self) -> str:
        """The actor of its changes in the audit trail."""
        return f"web:{self.name}"
