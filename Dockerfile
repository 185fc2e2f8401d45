# flops-bot: slim, non-root, pinned base.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md app.yml ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin flops
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "bot"]
CMD ["serve"]
