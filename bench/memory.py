"""Memory sampling: what a contender's process holds, read from ``/proc/self/status``.

Two figures per contender: peak RSS (``VmHWM``, the kernel's own high-water mark) and peak private memory
(``RssAnon``, sampled here every 10 ms). Both run inside the contender's process (see ``bench.child``).
"""

from __future__ import annotations

import resource
import threading


def proc_status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak RSS of this process since its exec, plus any child it waited for (MB).

    Not ``ru_maxrss`` of RUSAGE_SELF: Linux carries it across ``execve``, so a child would report the
    parent's RSS at fork when that is higher. ``VmHWM`` belongs to the process's own address space.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return max(proc_status_mb("VmHWM"), children)


class PrivatePeak:
    """Samples ``RssAnon`` (memory the process owns: heap, mmap'd buffers) every 10 ms; keeps the peak.

    ``VmHWM`` also counts the pages of shared libraries mapped from the page cache, and those vary with
    the page cache's state, not with the code: importing pyarrow maps 29 MB of its files after a
    ``drop_caches`` and 54 MB right after pip wrote them, the same files on the same machine.
    """

    def __init__(self) -> None:
        self.peak = proc_status_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc_status_mb("RssAnon"))

    def stop(self) -> float:
        """Stop sampling; the peak in MB, including one last sample."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status_mb("RssAnon"))
        return self.peak
