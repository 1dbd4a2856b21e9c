"""The machine, and peak extra memory of a step (see the package docstring)."""
import ctypes
import gc
import os
import platform
import threading
import time


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def proc_status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, such as ``VmHWM``."""
    with open('/proc/self/status', encoding='utf-8') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_bytes() -> int:
    """Resident set of this process."""
    return proc_status_kb('VmRSS') * 1024


def _reset_hwm() -> bool:
    """Resets ``VmHWM`` to the current resident set; False if it can't."""
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Returns glibc's free heap memory to the kernel (no-op elsewhere)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def cpu_memory_method() -> str:
    """How :class:`PeakMemory` measures on CPU in this process."""
    if _reset_hwm():
        return ('peak RSS growth: VmHWM after the step minus RSS before it '
                '(VmHWM reset via /proc/self/clear_refs, heap trimmed)')
    return 'peak RSS growth: RSS sampled every 1 ms during the step'


class _RssSampler(threading.Thread):
    """Samples the resident set until stopped; keeps the largest value."""

    def __init__(self, interval: float = 1e-3) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


class PeakMemory:
    """Peak memory growth over a ``with`` block, in bytes (``.extra``).

    Args:
        device (str): ``'cpu'`` (resident set, see the module docstring) or
            ``'cuda'`` (the caching allocator's statistics).
    """

    def __init__(self, device: str = 'cpu') -> None:
        self.device = device
        self.extra = 0
        self._base = 0
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device == 'cuda':
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        _malloc_trim()
        if not _reset_hwm():
            self._sampler = _RssSampler()
            self._sampler.start()
        self._base = _rss_bytes()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device == 'cuda':
            import torch
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self._sampler is not None:
            peak = self._sampler.stop()
        else:
            peak = proc_status_kb('VmHWM') * 1024
        self.extra = max(0, peak - self._base)
