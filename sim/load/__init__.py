"""``posgw-sim load``: a load generator of many terminals against one gateway.

Signs on N terminals of a world (the JSON ``posgw demo --json`` prints), then
drives them for a while: closed loop (each terminal sends its next request as
soon as it has the answer to the last) or open loop (requests scheduled at R/s
overall; latency counted from the scheduled time, so a slow gateway cannot hide
its queue). Every response's MAC is verified. Faults a real field brings can
be injected: a connection dropped before the answer (then the reversal, as a
terminal sends it), a repeated request, a bad MAC, garbage bytes.

Knows the protocol package and the simulator only, never the gateway. By concern:

- ``options``: what a run is told (``LoadOptions``, the mix, faults, amounts);
- ``world``: the terminals, cards and meters of ``posgw demo --json``;
- ``frames``: requests from templates, responses read by a fast field walker;
- ``connection``: one TCP connection, answers in request order;
- ``terminals``: a load terminal (keys, STANs, templates), choosing and signing them on;
- ``loops``: the closed and open loops, the warm-up, ``run_load``;
- ``faults``: drop, repeat, bad MAC, garbage, and the reversals after them;
- ``stats``: the counters, latency percentiles and the report;
- ``progress``: the live display; ``cli``: the command line.
"""

from __future__ import annotations

from sim.load.cli import add_parser, main
from sim.load.loops import run_load
from sim.load.options import LoadOptions
from sim.load.world import World

__all__ = ["LoadOptions", "World", "add_parser", "main", "run_load"]
