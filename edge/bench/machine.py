"""The machine a bench runs on, and this process's memory: facts a reader of the latencies needs."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from edge.bench.records import MachineInfo


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``model name``, or ``Hardware``/``Model`` on ARM)."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "Processor"):
        for line in info.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown"


def board_name() -> str:
    """The board (a Raspberry Pi's /proc/device-tree/model), else the CPU model."""
    return _read("/proc/device-tree/model") or cpu_model()


def cpu_governor() -> str:
    """The cpufreq governor of the CPUs ("performance", "ondemand", ...; "mixed: a,b"; "unknown")."""
    found = set()
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        g = _read(str(p))
        if g:
            found.add(g)
    if not found:
        return "unknown"
    return found.pop() if len(found) == 1 else "mixed: " + ",".join(sorted(found))


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def busy_warning(load1: float | None, cpu_count: int | None) -> str | None:
    """A warning when the 1-minute load average is above the core count: other work shares the CPUs."""
    if load1 is None or not cpu_count or load1 <= cpu_count:
        return None
    return (f"machine busy: load average {load1:.2f} above {cpu_count} cores during the bench; other "
            "processes shared the CPUs, so latencies are noisy (ratios between interleaved rounds less so)")


def system_info() -> MachineInfo:
    """Board, CPU, architecture, governor, load average and the warnings a reader of latencies needs."""
    governor = cpu_governor()
    warnings = []
    if governor != "performance":
        warnings.append(
            f"CPU governor is '{governor}', not 'performance': latencies may include frequency scaling "
            "(on a Pi: echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        )
    return MachineInfo(board=board_name(), cpu=cpu_model(), governor=governor, warnings=warnings,
                       cpu_count=os.cpu_count(), machine=platform.machine(), python=platform.python_version(),
                       load_average_start=load_average())


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 2)


def current_rss_mb() -> float:
    """This process's resident set size now, in MB (the peak where /proc is missing)."""
    statm = _read("/proc/self/statm")
    if statm:
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    return peak_rss_mb()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    from edge.runtime.preprocess import is_image_file

    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
