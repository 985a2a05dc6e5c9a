# One broadcaster node.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broadcaster ./broadcaster
COPY deploy ./deploy
RUN pip install --no-cache-dir . && useradd --system --no-create-home broadcaster

USER broadcaster
ENV BROADCASTER_HOST=0.0.0.0 BROADCASTER_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["broadcaster", "serve"]
