# posgw gateway image, in two stages.
#   build  builds the posgw wheel and installs it with its dependencies into a
#          virtualenv; binary wheels only (asyncpg, uvloop, cryptography and
#          pgserver ship them), so a dependency that would need a compiler
#          fails the build here instead of pulling one in
#   final  a fresh python:3.11-slim with that virtualenv and the settings
#          files, running as a non-root user: no compiler, no build tools,
#          no pip cache, no tests
# The database and the LMK come from the environment:
#   docker build -t posgw .
#   docker run -e POSGW_DATABASE_URL=postgresql://... -e POSGW_LMK=<32 hex> -p 8583:8583 posgw
# docker-compose.yml runs two of these behind HAProxy (README, "Scaling out").
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY ledger ledger
COPY gateway gateway
COPY sim sim
# tzdata: the zone database for zoneinfo (Asia/Shanghai), whatever the base image has.
# The SQL the migrations apply is package data (pyproject: package-data): check it came along.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/posgw \
 && /opt/posgw/bin/pip install --only-binary=:all: /wheels/posgw-*.whl tzdata \
 && /opt/posgw/bin/python -c "import pathlib, gateway, ledger; \
missing = [f'{p.__name__}/{d}' for p in (gateway, ledger) for d in ('migrations', 'functions') \
           if not any((pathlib.Path(p.__file__).parent / d).glob('*.sql'))]; \
assert not missing, f'no SQL files in {missing}'"

FROM ${PYTHON_IMAGE}
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /var/lib/posgw posgw
COPY --from=build /opt/posgw /opt/posgw
# the settings files only (config/ also holds HAProxy's and Prometheus's)
COPY config/*.toml /etc/posgw/
ENV PATH=/opt/posgw/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POSGW_CONFIG_DIR=/etc/posgw \
    POSGW_DATA_DIR=/var/lib/posgw \
    POSGW_LOG_FORMAT=json
USER posgw
WORKDIR /var/lib/posgw
EXPOSE 8583 9583
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('POSGW_METRICS_PORT', '9583'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["posgw", "serve"]
