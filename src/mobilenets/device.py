"""Device and CPU thread choice shared by training, evaluation, deployment and prediction."""

from __future__ import annotations

import ctypes
import os
import platform

import torch


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``device`` if given (``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present here), else CUDA
    (this process's GPU) when available, else CPU; raise ``ValueError`` for any other device."""
    if device is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"  # devices that run models on data ('meta' has no data)
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be {allowed}, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be {allowed}, got {device!r}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        if resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 and up"
            )
    return resolved


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(workers: int = 0, processes: int = 1) -> int:
    """Compute threads per process: PyTorch's count when ``$OMP_NUM_THREADS`` is set (the user's
    choice, which PyTorch follows), else its share of :func:`usable_cores` among ``processes``,
    minus its ``workers`` loader processes, at least 1.

    More threads than free cores is far worse than fewer: each parallel operation then waits for
    a thread that the OS has descheduled (measured here: 20× slower training steps with 2 threads on
    2 cores beside one busy process, against 1 thread).
    """
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, usable_cores() // processes - workers)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP_LIMIT = 2**31 - 1  # the largest value mallopt takes: never trim the heap


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (no ``mmap`` for large blocks, no trimming of
    the heap); return whether it applied (False off glibc). Process-wide, and not undone.

    By default glibc maps every block above a threshold (128 KiB, rising to at most 32 MiB as blocks
    are freed) fresh from the OS and unmaps it on free, so a training step that allocates its
    activations and gradients anew pays a page fault for every 4 KiB it writes. Kept, timm's MobileNet
    V1 trained 1.26× faster at 32 px and 2.6× at 224 px (channels-last, side by side on this project's
    CPUs: docs/benchmarks.md). The cost: the process's resident memory stays at its peak.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_LIMIT))
