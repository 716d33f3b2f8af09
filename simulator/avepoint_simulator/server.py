"""HTTP handling and routing: one threaded server for identity, the jobs API and test controls.

Each connection gets its own thread, and its TLS handshake happens in that thread (not in
``accept()``), so a slow or stuck client never holds up the others. Connections are HTTP/1.1
keep-alive with a Content-Length on every answer, as a real gateway's are.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from avepoint_simulator import api
from avepoint_simulator.faults import Verdict
from avepoint_simulator.identity import TokenError
from avepoint_simulator.service import ServedService

__all__ = ["SimulatorHTTPServer"]

V1_PATH = "/api/openapi/getjobs"
V2_PATH = "/dynamicsbackup/jobs"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/openid-configuration/jwks"
TOKEN_PATH = "/connect/token"
CONTROL_PREFIX = "/_simulator/"
_ERROR_MESSAGES = {
    500: "An unexpected error occurred on the server.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable.",
    504: "Gateway timeout.",
}


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that does TLS per connection thread and can cut every connection.

    Args:
        address: ``(host, port)``; port 0 picks a free one.
        service: What the handlers serve (identity, world, faults, stats, ...): nothing else of
            the simulator reaches the server.
        ssl_context: Server TLS context, or None for plain HTTP.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        service: ServedService,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.service = service
        #: The host asked for (``server_address`` holds what it was bound as).
        self.host = address[0]
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: handshake here, then serve, then close."""
        conn: socket.socket = request
        if self.ssl_context is not None:
            conn.settimeout(10)
            try:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        with self._connections_lock:
            self._connections.add(conn)
        try:
            Handler(conn, client_address, self)
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            with self._connections_lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients that hang up are part of the game here."""

    def close_connections(self) -> None:
        """Cut every open keep-alive connection (on stop)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """Routes one request to identity, the jobs API or the controls."""

    server: SimulatorHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "AvePointSimulator/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after a minute
    # Headers and body leave in one write, without Nagle: otherwise delayed ACKs add ~40 ms.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines (tests make thousands)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the service's clock (which may be offset from this machine's)."""
        return super().date_time_string(
            self.service.clock.seconds() if timestamp is None else timestamp
        )

    # ------------------------------------------------------------------ plumbing
    @property
    def service(self) -> ServedService:
        return self.server.service

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _root(self) -> str:
        scheme = "https" if self.server.ssl_context is not None else "http"
        host = self.headers.get("Host") or f"{self.server.host}:{self.server.server_port}"
        return f"{scheme}://{host}"

    # ------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def do_PATCH(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True  # we cannot tell where the next request starts
            self._other(400, "Malformed Content-Length or chunked body.")
            return
        try:
            self._dispatch(body)
        except OSError:
            raise  # the client went away: nothing to answer
        except Exception as exc:  # a simulator bug must still answer, as a 500
            self.close_connection = True
            self._send_json(500, api.error_body(500, f"Simulator error: {exc!r}"))

    def _dispatch(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        lower = path.rstrip("/").lower() or "/"
        if lower.startswith(CONTROL_PREFIX):
            self._control(lower[len(CONTROL_PREFIX) :], body)
            return
        routes = {
            DISCOVERY_PATH: ("GET", "discovery"),
            JWKS_PATH: ("GET", "discovery"),
            TOKEN_PATH: ("POST", "token"),
            V1_PATH: ("POST", "GetJobs"),
            V2_PATH: ("GET", "v2jobs"),
        }
        route = routes.get(lower)
        if route is None:
            self._other(404, "Not found.")
            return
        method, endpoint = route
        if self.command != method and not (self.command == "HEAD" and method == "GET"):
            self._other(405, f"Method {self.command} is not allowed here; use {method}.", endpoint)
            return
        if endpoint == "discovery":
            self.service.stats.record(endpoint, 200)
            self._send_json(
                200,
                self.service.identity.jwks()
                if lower == JWKS_PATH
                else self.service.identity.discovery(self._root()),
            )
        elif endpoint == "token":
            self._token(body)
        else:
            self._jobs(endpoint, body, query)

    def _other(self, status: int, message: str, endpoint: str = "other") -> None:
        self.service.stats.record(endpoint, status)
        self._send_json(status, api.error_body(status, message))

    # ------------------------------------------------------------------ faults
    def _apply_verdict(self, verdict: Verdict) -> int | str:
        """Carry out a fault decided before answering; returns the status to count."""
        if verdict.kind == "drop":
            self._drop()
            return "drop"
        if verdict.kind == "429":
            headers = {"Retry-After": verdict.retry_after} if verdict.retry_after else None
            self._send_json(
                429, api.error_body(429, "Too many requests. Please retry later."), headers
            )
            return 429
        message = _ERROR_MESSAGES.get(verdict.status, "Server error.")
        self._send_json(verdict.status, api.error_body(verdict.status, message))
        return verdict.status

    def _send_maybe_truncated(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        keep = self.service.injector.truncate(self.service.faults())
        if keep is not None and len(body) > 1:
            # A complete HTTP answer (Content-Length matches) whose JSON stops mid-way.
            body = body[: max(1, min(len(body) - 1, int(len(body) * keep)))]
        self._send(status, body, headers=headers)

    # ------------------------------------------------------------------ identity
    def _token(self, body: bytes) -> None:
        service = self.service
        service.stats.token_request()
        faults = service.faults()
        status: int | str = 500
        try:
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000)
            verdict = service.injector.before_token(faults)
            if verdict is None and faults.faults_on_token:
                verdict = service.injector.before(faults, 1, service.clock.seconds())
            if verdict is not None:
                status = self._apply_verdict(verdict)
                return
            root = self._root()
            try:
                payload = service.identity.issue(
                    self.headers.get("Content-Type", ""),
                    body,
                    self.headers.get("Authorization"),
                    {service.token_url(), f"{root}{TOKEN_PATH}"},
                    faults.token_lifetime_s,
                )
            except TokenError as err:
                status = err.status
                headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
                if err.status == 401:
                    headers["WWW-Authenticate"] = 'Basic realm="identity"'
                self._send_json(err.status, err.body(), headers)
                return
            status = 200
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            data = json.dumps(payload).encode()
            if faults.faults_on_token:
                self._send_maybe_truncated(200, data, headers)
            else:
                self._send(200, data, headers=headers)
        finally:
            service.stats.record("token", status)

    # ------------------------------------------------------------------ jobs
    def _jobs(self, endpoint: str, body: bytes, query: str) -> None:
        service = self.service
        in_flight = service.stats.enter_jobs()
        status: int | str = 500
        try:
            faults = service.faults()
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000)
            verdict = service.injector.before(faults, in_flight, service.clock.seconds())
            if verdict is not None:
                status = self._apply_verdict(verdict)
                return
            problem = service.identity.check_bearer(self.headers.get("Authorization"))
            if problem is not None:
                status = 401
                self._send_json(
                    401,
                    api.error_body(401, f"Unauthorized: {problem}."),
                    {
                        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{problem}"'
                    },
                )
                return
            try:
                if endpoint == "GetJobs":
                    request = api.parse_v1(self.headers.get("Content-Type"), body)
                else:
                    missing = api.missing_v2_fields(query) if faults.strict_get else []
                    if missing:
                        status = 400
                        self._send_json(400, api.validation_body(missing))
                        return
                    request = api.parse_v2(query)
                if faults.oversize_pages == "drop" and request.size > faults.max_page_size:
                    self._drop()
                    status = "drop"
                    return
                request = api.with_page_size_rule(
                    request,
                    faults.max_page_size,
                    faults.oversize_pages,
                    "v1" if endpoint == "GetJobs" else "v2",
                )
            except api.ApiError as err:
                status = err.status
                self._send_json(err.status, api.error_body(err.status, err.message, err.field))
                return
            if faults.churn_per_page:
                service.world.churn(faults.churn_per_page)
            request = api.with_window_reading(request, faults.window, faults.window_start_exclusive)
            payload = api.answer(
                service.world,
                request,
                newest_first=faults.sort == "newest",
                wrapper=faults.wrapper,
                repeat_page=faults.repeat_page,
                total_offset=faults.total_offset,
                selects=faults.window_selects,
                shuffle_ties=faults.ties == "shuffled",
                report_total=faults.report_total,
                repeat_in_page=faults.repeat_in_page,
                next_link_prefix=api.V2_PATH if faults.next_link == "full" else "/jobs",
                times_in_milliseconds=faults.times_shown == "milliseconds",
            )
            status = 200
            if faults.malformed_response is not None:
                self._send_malformed(faults.malformed_response, payload)
                return
            self._send_maybe_truncated(200, orjson.dumps(payload))
        except Exception as exc:  # a simulator bug must still answer, as a 500
            if status != 500:
                raise
            self._send_json(500, api.error_body(500, f"Simulator error: {exc!r}"))
        finally:
            service.stats.leave_jobs()
            service.stats.record(endpoint, status)

    def _send_malformed(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "not_json":
            self._send(200, b"{'totalCount': 1, jobs: [oops", "application/json; charset=utf-8")
        elif kind == "html":
            page = b"<!DOCTYPE html><html><head><title>Service maintenance</title></head><body><h1>We'll be back soon</h1></body></html>"
            self._send(200, page, "text/html; charset=utf-8")
        else:  # no_job_list: the envelope without its list
            trimmed = {k: v for k, v in payload.items() if k not in ("jobs", "result")}
            self._send_json(200, trimmed)

    # ------------------------------------------------------------------ controls
    def _control(self, action: str, body: bytes) -> None:
        """Out-of-process control (bench, CI): loopback only, no auth."""
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self._send_json(403, {"error": "the simulator's controls answer loopback clients only"})
            return
        service = self.service
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            if action == "stats" and self.command in ("GET", "HEAD"):
                self._send_json(200, service.stats.snapshot())
            elif action == "reset_stats" and self.command == "POST":
                service.stats.reset()
                self._send_json(200, service.stats.snapshot())
            elif action == "faults" and self.command in ("GET", "HEAD"):
                self._send_json(200, service.faults().as_dict())
            elif action == "faults" and self.command == "POST":
                if "error_statuses" in payload:
                    payload["error_statuses"] = tuple(payload["error_statuses"])
                service.set_faults(**payload)
                self._send_json(200, service.faults().as_dict())
            elif action == "jobs" and self.command == "POST":
                self._send_json(200, self._control_jobs(payload))
            elif action == "ground_truth" and self.command == "GET":
                self._stream_ground_truth()
            elif action == "info" and self.command == "GET":
                self._send_json(200, service.connection_info())
            else:
                self._send_json(404, {"error": f"no control {self.command} /_simulator/{action}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._send_json(400, {"error": str(exc)})

    def _control_jobs(self, payload: dict[str, Any]) -> dict[str, Any]:
        world = self.service.world
        out: dict[str, Any] = {}
        if payload.get("finish_running"):
            ids = payload["finish_running"] if isinstance(payload["finish_running"], list) else None
            out["finished"] = world.finish_running(ids, payload.get("status"))
        if payload.get("purge"):
            out["purged"] = world.purge_oldest(int(payload["purge"]))
        if payload.get("add"):
            spread = payload.get("spread_hours")
            out["added"] = world.add_jobs(
                int(payload["add"]),
                int(payload.get("running", 0)),
                payload.get("organization_id"),
                float(spread) if spread is not None else None,
            )
        out["total"] = world.total()
        return out

    def _stream_ground_truth(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        chunk(b"[")
        batch: list[str] = []
        first = True
        for job in self.service.world.iter_ground_truth():
            batch.append(json.dumps(job))
            if len(batch) == 1000:
                chunk((b"" if first else b",") + ",".join(batch).encode())
                first, batch = False, []
        if batch:
            chunk((b"" if first else b",") + ",".join(batch).encode())
        chunk(b"]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
