# One image for the gateway and every model service (docker-compose.yml picks the command).
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml Makefile ./
COPY scripts ./scripts
COPY shared ./shared
COPY services ./services
COPY gateway ./gateway
COPY config ./config
RUN bash scripts/install.sh

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ARENA_FLEET__DATA_DIR=/data
