# flops-bot: slim, non-root, pinned base. Build: docker build -t <registry>/flops-bot:<tag> .
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.10-slim-bookworm
LABEL org.opencontainers.image.title="flops-bot" \
      org.opencontainers.image.description="ML and federated-learning CI/CD in your own Kubernetes cluster"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin flops
# The root filesystem is read-only in deploy/ (only /tmp is writable): nothing is written elsewhere.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "bot"]
CMD ["serve"]
