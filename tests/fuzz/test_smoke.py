"""A short fuzzing run of every target, in make test.

With atheris (the ``fuzz`` extra, Linux x86_64): each target of
``fuzz_targets.py`` runs coverage-guided for ``POSGW_FUZZ_SMOKE_SECONDS``
(default 3), all three at once, from the seed corpus; new corpus entries go
to a temporary directory, a crash is saved under ``tests/fuzz/crashes/``
(where ``test_regressions`` replays it from then on) and fails the test.

Without atheris the same target functions get a fixed hypothesis budget
instead: this test never skips, it warns that it ran the fallback.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_targets import CORPUS_DIR, TARGETS, run_target

ATHERIS = importlib.util.find_spec("atheris") is not None
SECONDS = int(os.environ.get("POSGW_FUZZ_SMOKE_SECONDS", "3"))
FALLBACK_EXAMPLES = 150  # per target


def test_every_fuzz_target_runs_clean_for_a_moment(tmp_path):
    if ATHERIS:
        _atheris(tmp_path)
    else:
        warnings.warn("atheris is not installed (the fuzz extra, Linux x86_64 only): "
                      "the fuzz smoke test ran the targets under hypothesis instead", stacklevel=1)
        _hypothesis()


def _atheris(tmp_path: Path) -> None:
    def run(name: str):
        return run_target(name, SECONDS, tmp_path / name, log=tmp_path / f"{name}.log")

    with ThreadPoolExecutor(len(TARGETS)) as pool:
        results = list(pool.map(run, TARGETS))
    for result in results:
        print(result.summary())
    failed = [r for r in results if r.crashed or not r.runs]
    assert not failed, "\n\n".join(
        f"{r.summary()}\n" + "\n".join(r.log.read_text(errors="replace").splitlines()[-40:]) for r in failed)


def _seeds(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS_DIR / name).iterdir()) if p.is_file()]


def _hypothesis() -> None:
    for name, target in TARGETS.items():
        seeds = _seeds(name)

        @settings(max_examples=FALLBACK_EXAMPLES, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.one_of(
            st.binary(max_size=400),
            st.tuples(st.sampled_from(seeds), st.integers(0, 4095), st.binary(max_size=8), st.integers(0, 8))
            .map(lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) + t[3]:]),
        ))
        def fuzz(data: bytes) -> None:
            target(data)  # noqa: B023 (called at once, below, in this iteration)

        fuzz()
