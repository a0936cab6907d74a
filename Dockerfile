# Crossdock's image: exactly requirements.lock (hash-checked: the service and every extra), then the
# project itself without dependencies. Default command `crossdock serve`; compose.yaml runs it with
# Redis, PostgreSQL, Qdrant and the twin.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CROSSDOCK_ENV=production CROSSDOCK_HOST=0.0.0.0 CROSSDOCK_PORT=8000 \
    CROSSDOCK_DATA_DIR=/var/lib/crossdock/data \
    CROSSDOCK_KNOWLEDGE_PATH=/var/lib/crossdock/knowledge

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes. The image's pip (24 or
# later) is used as it is: pip before 23.3 mishandles extras in hash-checking mode.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY domain ./domain
COPY connectors ./connectors
COPY tools ./tools
COPY agents ./agents
COPY crews ./crews
COPY knowledge ./knowledge
COPY runtime ./runtime
COPY api ./api
COPY chat ./chat
COPY bench ./bench
COPY twin ./twin
COPY crossdock ./crossdock
# setuptools comes from the lock too (--no-build-isolation): nothing unpinned is downloaded.
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/crossdock --no-create-home crossdock \
    && mkdir -p /var/lib/crossdock/data /var/lib/crossdock/knowledge \
    && chown -R crossdock:crossdock /var/lib/crossdock

USER crossdock
# Relative paths (`out/`, `.cache/`) land in the crossdock user's home, which it may write.
WORKDIR /var/lib/crossdock
# The SQLite store, the embedded Redis and the triage model (CROSSDOCK_DATA_DIR), and the local
# knowledge base (CROSSDOCK_KNOWLEDGE_PATH). Unused when DATABASE_URL, REDIS_URL and QDRANT_URL are set.
VOLUME ["/var/lib/crossdock/data", "/var/lib/crossdock/knowledge"]
EXPOSE 8000
# /readyz answers 200 when Redis and the store are reachable, 503 otherwise (urlopen raises on 503).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('CROSSDOCK_PORT', '8000'), timeout=4)" || exit 1
# Set CROSSDOCK_API_KEYS (production refuses short or placeholder keys), REDIS_URL, DATABASE_URL,
# QDRANT_URL and the system URLs at run time.
CMD ["crossdock", "serve"]
