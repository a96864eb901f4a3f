"""What the CPU can do, read from /proc/cpuinfo: generation and search pick their fast
paths from it, and the benches print it."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """bfloat16 matrix arithmetic in hardware (AVX512-BF16 or AMX), where autocast pays."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_last_level_cache_bytes(*, default: int = 32 * 2**20) -> int:
    """The largest data cache's size (Linux sysfs: L3 on the CPUs met so far), or
    ``default`` where unknown. A timing meant to measure memory, not cache, reads more."""
    from pathlib import Path

    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    largest = 0
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (entry / "type").read_text().strip()
            size = (entry / "size").read_text().strip().upper()
            value = int(size[:-1]) * units[size[-1]] if size[-1:] in units else int(size)
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            largest = max(largest, value)
    return largest or default
