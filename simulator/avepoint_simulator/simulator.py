"""The Simulator: builds the world, the identity and the server, and runs them in a thread."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import ssl
import tempfile
import threading
import uuid
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from avepoint_simulator.certs import ServerTLS, make_certificate, make_pfx, make_server_tls
from avepoint_simulator.faults import FaultInjector, Faults
from avepoint_simulator.identity import SCOPE, App, Identity
from avepoint_simulator.jobs_store import JobStore
from avepoint_simulator.server import TOKEN_PATH, SimulatorHTTPServer
from avepoint_simulator.service import ServedService
from avepoint_simulator.stats import Stats
from avepoint_simulator.times import ServiceClock, ticks_from_datetime
from avepoint_simulator.world import World

__all__ = ["Simulator"]


class Simulator:
    """A local AvePoint Cloud Backup for Dynamics 365 jobs API, identity included.

    Example::

        with Simulator(jobs=5_000, seed=7) as sim:
            token = requests.post(sim.token_url, data={...}, verify=sim.ca_file).json()

    Args:
        jobs: Jobs in the history at start.
        seed: Seeds the history, the credentials' ids and the faults' dice.
        latency_ms: Shortcut for ``Faults.latency_ms``.
        tls: Serve HTTPS with a throwaway CA (``ca_file``); False serves plain HTTP.
        token_lifetime_s: Shortcut for ``Faults.token_lifetime_s`` (default 3600).
        sort: Shortcut for ``Faults.sort`` (``"newest"`` or ``"oldest"``).
        wrapper: Shortcut for ``Faults.wrapper`` (``"current"`` or ``"draft"``).
        faults: Initial fault settings (the shortcuts above override their fields).
        now: Anchor of the generated history (every job starts before it); default wall clock.
            Same ``seed`` and ``now`` give identical jobs.
        host: Interface to listen on.
        port: Port; 0 picks a free one.
        history_days: How far back the generated history reaches.
        running: How many of the newest generated jobs are in progress (default 3, fewer
            for tiny histories).
        arrivals_per_minute: When set, a background clock adds a job (in progress) this many
            times a minute and finishes the clock's jobs two ticks later.
        client_id: The default app's client id (default: derived from the seed).
        client_secret: The default app's secret (default: random).
    """

    def __init__(
        self,
        jobs: int = 1_000,
        seed: int = 0,
        latency_ms: float | None = None,
        tls: bool = True,
        token_lifetime_s: float | None = None,
        sort: str | None = None,
        wrapper: str | None = None,
        faults: Faults | None = None,
        now: dt.datetime | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        history_days: float = 180.0,
        running: int | None = None,
        arrivals_per_minute: float | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        shortcuts = {
            "latency_ms": latency_ms,
            "token_lifetime_s": token_lifetime_s,
            "sort": sort,
            "wrapper": wrapper,
        }
        self._faults = (faults or Faults()).replace(
            **{k: v for k, v in shortcuts.items() if v is not None}
        )
        self._faults_lock = threading.Lock()
        self.seed = seed
        self.host = host
        self._requested_port = port
        self.tls = tls
        self.arrivals_per_minute = arrivals_per_minute
        #: The service's clock: this machine's plus ``Faults.clock_offset_s``.
        self.clock = ServiceClock(self._faults.clock_offset_s)
        anchor = ticks_from_datetime(now) if now is not None else self.clock.ticks()
        self._store = JobStore(jobs, seed, anchor, history_days=history_days, running=running)
        self.world = World(self._store, seed, self.clock)
        self._injector = FaultInjector(seed)
        self._stats = Stats()
        self._server_tls: ServerTLS | None = make_server_tls() if tls else None
        self._folder = tempfile.mkdtemp(prefix="avepoint-sim-client-")
        self._identity = Identity(
            self._server_tls.server_public_key if self._server_tls else None, clock=self.clock
        )
        ids = random.Random(f"credentials:{seed}")
        default_id = client_id or str(uuid.UUID(int=ids.getrandbits(128), version=4))
        self.private_key_pem, self.certificate_pem = make_certificate(
            f"avepoint-simulator-{default_id}"
        )
        self._default_app = self._identity.register(
            App(
                client_id=default_id,
                client_secret=client_secret or secrets.token_urlsafe(24),
                certificate_pems=[self.certificate_pem],
                private_key_pem=self.private_key_pem,
            )
        )
        self.pfx_password = secrets.token_urlsafe(12)
        self.pfx_path = os.path.join(self._folder, "client.pfx")
        with open(self.pfx_path, "wb") as fh:
            fh.write(make_pfx(self.private_key_pem, self.certificate_pem, self.pfx_password))
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clock_stop = threading.Event()
        self._clock: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Simulator:
        """Bind and serve in a background thread. Returns self."""
        if self._server is not None:
            return self
        context = None
        if self._server_tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2  # as AvePoint's hosts
            context.load_cert_chain(self._server_tls.cert_file, self._server_tls.key_file)
        self._server = SimulatorHTTPServer(
            (self.host, self._requested_port), self._served(), context
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="avepoint-simulator",
            daemon=True,
        )
        self._thread.start()
        if self.arrivals_per_minute:
            self._clock_stop.clear()
            self._clock = threading.Thread(
                target=self._run_clock, name="avepoint-simulator-clock", daemon=True
            )
            self._clock.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and remove the temporary files."""
        self._clock_stop.set()
        if self._clock is not None:
            self._clock.join(timeout=5)
            self._clock = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._server_tls is not None:
            self._server_tls.cleanup()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _served(self) -> ServedService:
        """What the server's handlers get of this simulator (they see nothing else of it)."""
        return ServedService(
            identity=self._identity,
            world=self.world,
            stats=self._stats,
            injector=self._injector,
            clock=self.clock,
            faults=lambda: self._faults,
            set_faults=self.set_faults,
            token_url=lambda: self.token_url,
            connection_info=self.connection_info,
        )

    def _run_clock(self) -> None:
        assert self.arrivals_per_minute
        interval = 60.0 / self.arrivals_per_minute
        pending: list[list[str]] = []
        while not self._clock_stop.wait(interval):
            added = self.world.add_jobs(1, running=1)
            pending.append([job["jobId"] for job in added])
            if len(pending) > 2:
                with contextlib.suppress(KeyError):  # purged meanwhile
                    self.world.finish_running(pending.pop(0))

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        """The port served on (after start)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started; use start() or a with block")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: the API root (no trailing slash)."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def identity_url(self) -> str:
        """The identity root (the same server): discovery's issuer, no path."""
        return self.base_url

    @property
    def token_url(self) -> str:
        """``identity_url + "/connect/token"``: also the ``aud`` client assertions must name."""
        return self.identity_url + TOKEN_PATH

    @property
    def ca_file(self) -> str | None:
        """PEM of the CA that signed the server certificate (None with ``tls=False``)."""
        return self._server_tls.ca_file if self._server_tls else None

    # ------------------------------------------------------------------ credentials
    @property
    def client_id(self) -> str:
        """The default app's client id (accepts the secret and the certificate)."""
        return self._default_app.client_id

    @property
    def client_secret(self) -> str:
        """The default app's client secret."""
        assert self._default_app.client_secret is not None
        return self._default_app.client_secret

    @property
    def thumbprint(self) -> str:
        """SHA-1 thumbprint (hex) of the default app's certificate, as msal's ``thumbprint`` wants."""
        cert = x509.load_pem_x509_certificate(self.certificate_pem.encode())
        return cert.fingerprint(hashes.SHA1()).hex().upper()

    def register_app(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        certificate_pem: str | None = None,
        scopes: tuple[str, ...] = (SCOPE,),
    ) -> App:
        """Register another app (e.g. one without the scope, one with an expired certificate).

        Args:
            client_id: Its id (default: a random GUID).
            client_secret: Its secret; when neither this nor a certificate is given, a random one.
            certificate_pem: A certificate it authenticates with (see ``certs.make_certificate``).
            scopes: The scopes it was granted; ``()`` gets ``invalid_scope``.

        Returns:
            The registration.
        """
        if client_secret is None and certificate_pem is None:
            client_secret = secrets.token_urlsafe(24)
        return self._identity.register(
            App(
                client_id=client_id or str(uuid.uuid4()),
                client_secret=client_secret,
                certificate_pems=[certificate_pem] if certificate_pem else [],
                scopes=tuple(scopes),
            )
        )

    def connection_info(self) -> dict[str, Any]:
        """What a client needs: ``{"base_url", "identity_url", "token_url", "client_id", "client_secret", "ca_file"}``."""
        return {
            "base_url": self.base_url,
            "identity_url": self.identity_url,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "ca_file": self.ca_file,
        }

    # ------------------------------------------------------------------ faults and stats
    @property
    def faults(self) -> Faults:
        """The current fault settings (replace them with :meth:`set_faults`)."""
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Change fault settings while running, e.g. ``set_faults(error_rate=0.1)``.

        Raises:
            TypeError: An unknown setting.
            ValueError: A value out of range.
        """
        with self._faults_lock:
            self._faults = self._faults.replace(**changes)
            self.clock.offset_s = self._faults.clock_offset_s
            return self._faults

    def stats(self) -> dict[str, Any]:
        """``{"requests": {"<endpoint> <status>": n}, "max_in_flight", "token_requests", "jobs_requests", "in_flight"}``.

        Endpoints: ``token``, ``discovery``, ``GetJobs``, ``v2jobs``, ``other``; a dropped
        connection counts as status ``drop``. In-flight figures count jobs requests.
        """
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._stats.reset()

    def issued_tokens(self) -> list[str]:
        """Every access token the identity service has handed out and still remembers (expired
        ones are forgotten once more than 1,000 are held), oldest first."""
        return self._identity.issued_tokens()
