"""Container logs for the run pages: followed live (`pods/log?follow=true`) and read whole.

The official client is synchronous: a followed log is read on its own thread (a stream may last
hours: never one of the default executor's few threads) and handed to the event loop line by line;
closing the `Follow` shuts the stream's socket, which ends the thread.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from kubernetes.client import ApiException

from bot.platform import logs
from bot.platform.kube import Kube

log = logs.get_logger(__name__)

LINE_MAX = 16 * 1024  # characters of one line shown; the rest of a longer line is cut
QUEUE_LINES = 10_000  # lines a slow browser may fall behind before the stream is cut


class Follow:
    """The lines of one container's log from its start, then as it prints them, until it ends."""

    def __init__(self, kube: Kube, pod: str, container: str) -> None:
        self._kube, self._pod, self._container = kube, pod, container
        self._lines: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LINES)
        self._response: Any = None
        self._closed = threading.Event()
        self.waiting = False  # the API server refused: the container has not started (or the Pod is gone)

    def start(self) -> asyncio.Queue[str | None]:
        """Start reading; the queue gets each line, then None when the log ended (or the stream broke)."""
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True, name="flops-log").start()
        return self._lines

    def close(self) -> None:
        """Stop following (on the event loop): the reader gets None at once, the thread ends at its next read."""
        if self._closed.is_set():
            return
        self._closed.set()
        _interrupt(self._response)
        if self._lines.full():
            self._lines.get_nowait()
        self._lines.put_nowait(None)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._response = self._kube.follow_log(self._pod, self._container)
            if self._closed.is_set():  # closed while the request was on its way
                return
            pending = b""
            for chunk in self._response.stream(16 * 1024):
                if self._closed.is_set():
                    break
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._put(loop, raw)
                pending = pending[-LINE_MAX * 4:]
            if pending and not self._closed.is_set():
                self._put(loop, pending)
        except ApiException as exc:
            self.waiting = exc.status in (400, 404)
            if not self.waiting:  # waiting to start, or gone: nothing to follow
                log.warning("following a log failed", extra={"pod": self._pod, "status": exc.status})
        except Exception as exc:  # the browser left (closed), or the API server cut the stream
            if not self._closed.is_set():
                log.info("log stream ended", extra={"pod": self._pod, "error": repr(exc)})
        finally:
            if self._response is not None:
                self._response.release_conn()  # on this thread: closing it from the loop would wait for a read
            self._end(loop)

    def _put(self, loop: asyncio.AbstractEventLoop, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")[:LINE_MAX]
        try:
            loop.call_soon_threadsafe(self._offer, line)
        except RuntimeError:  # the loop is closed: the bot is stopping
            self._closed.set()

    def _offer(self, line: str) -> None:
        if self._closed.is_set():
            return
        if self._lines.full():  # the reader fell too far behind: stop rather than buffer without bound
            self.close()
            return
        self._lines.put_nowait(line)

    def _end(self, loop: asyncio.AbstractEventLoop) -> None:
        def finish() -> None:
            if self._closed.is_set():  # closed: its None is in the queue already
                return
            if self._lines.full():
                self._lines.get_nowait()
            self._lines.put_nowait(None)
        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:
            pass


def _interrupt(response: Any) -> None:
    """Make the thread reading `response` stop: its socket is shut down (its next read ends) without taking
    the reader's lock, which `close()` would wait for while the thread waits for the next line."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
