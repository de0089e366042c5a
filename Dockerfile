# posgw gateway image: builds in one stage, runs as a non-root user in another
# (no compiler in the final image). The database URL comes from the
# environment: docker run -e POSGW_DATABASE_URL=postgresql://... -e POSGW_LMK=... posgw
FROM python:3.11-slim AS build
RUN python -m venv /opt/posgw
COPY pyproject.toml README.md /src/
COPY protocol /src/protocol
COPY ledger /src/ledger
COPY gateway /src/gateway
COPY sim /src/sim
RUN /opt/posgw/bin/pip install --no-cache-dir /src

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/posgw posgw
COPY --from=build /opt/posgw /opt/posgw
COPY config /etc/posgw
ENV PATH=/opt/posgw/bin:$PATH \
    POSGW_CONFIG_DIR=/etc/posgw \
    POSGW_DATA_DIR=/var/lib/posgw \
    POSGW_LOG_FORMAT=json
USER posgw
WORKDIR /var/lib/posgw
EXPOSE 8583 9583
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9583/healthz').status != 200)"
CMD ["posgw", "serve"]
