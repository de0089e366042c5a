"""The fixtures of the jobs' tests: the payouts' book (tests/jobs/payout_world.py) and the
agent network (tests/jobs/agent_world.py)."""

from tests.jobs.agent_world import network  # noqa: F401 (a fixture)
from tests.jobs.payout_world import book  # noqa: F401 (a fixture)
