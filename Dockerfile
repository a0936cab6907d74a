# Mirrors the README's install: a venv-free pip install of the project, default command `crossdock serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CROSSDOCK_HOST=0.0.0.0 CROSSDOCK_PORT=8000 CROSSDOCK_DATA_DIR=/var/lib/crossdock CROSSDOCK_ENV=production

WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY connectors ./connectors
COPY tools ./tools
COPY agents ./agents
COPY crews ./crews
COPY knowledge ./knowledge
COPY runtime ./runtime
COPY api ./api
COPY twin ./twin
COPY crossdock ./crossdock
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/crossdock crossdock \
    && mkdir -p /var/lib/crossdock && chown crossdock /var/lib/crossdock

USER crossdock
EXPOSE 8000
# Set CROSSDOCK_API_KEYS, REDIS_URL, DATABASE_URL and the system URLs at run time.
CMD ["crossdock", "serve"]
