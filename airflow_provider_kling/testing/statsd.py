"""
A StatsD server as far as Airflow can tell: a UDP socket on loopback that keeps every line it is
sent, with the time it came. Point ``[metrics] statsd_host``/``statsd_port`` at it to read the
``kling.*`` metrics of a DAG run in a test.

    with StatsdListener() as statsd:
        env["AIRFLOW__METRICS__STATSD_PORT"] = str(statsd.port)
        ...  # run the DAG
    assert statsd.total("kling.submitted") == 1
"""

from __future__ import annotations

import socket
import threading
import time


class StatsdListener(threading.Thread):
    """
    Collects StatsD lines on ``127.0.0.1:port`` (a free port) in a thread of its own.

    :param prefix: ``[metrics] statsd_prefix`` of the Airflow sending to it.
    """

    def __init__(self, prefix: str = "airflow") -> None:
        super().__init__(daemon=True)
        self.prefix = prefix
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)  # bursts of a busy run
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        #: Every line received, with when it came (Unix seconds).
        self.lines: list[tuple[float, str]] = []
        self.stopped = threading.Event()

    def __enter__(self) -> StatsdListener:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                continue
            now = time.time()
            self.lines.extend((now, line) for line in packet.decode(errors="replace").splitlines())

    def close(self) -> None:
        """Stop listening (once the lines in flight are in) and close the socket."""
        self.stopped.set()
        if self.is_alive():
            self.join(5)
        self.sock.close()

    def ours(self) -> list[tuple[float, str, float, str]]:
        """The provider's metrics as (time, name, value, type), the prefix taken off: ``kling.submitted``..."""
        found = []
        for at, line in self.lines:
            name, _, rest = line.partition(":")
            if name.startswith(f"{self.prefix}.kling."):
                value, _, kind = rest.partition("|")
                found.append((at, name.removeprefix(f"{self.prefix}."), float(value.lstrip("+")), kind.split("|")[0]))
        return found

    def total(self, name: str, kind: str = "c") -> float:
        """The sum of every value of ``name`` of type ``kind`` (``c`` counter, ``g`` gauge, ``ms`` timer)."""
        return sum(value for _, found, value, k in self.ours() if found == name and k == kind)
