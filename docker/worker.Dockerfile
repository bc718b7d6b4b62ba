# The streaming worker: Faust + ONNX Runtime, no torch.  Built by docker-compose.yml (context: repo root):
#   docker compose build worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Only what the package needs (no runs/, bundles/ or .git in the image).
COPY pyproject.toml README.md ./
COPY model ./model
COPY export ./export
COPY streams ./streams
COPY cli ./cli
RUN pip install ".[serve]" && useradd --create-home --uid 10001 streamrec && mkdir -p /state && chown streamrec /state

USER streamrec
WORKDIR /state
# The ONNX bundle is mounted at /bundle; per-user state (RocksDB) lives in /state.
ENTRYPOINT ["streamrec"]
CMD ["worker", "--bundle", "/bundle", "--brokers", "kafka:9092"]
