import platform
import subprocess
import sys

import pytest

# Allocates 64 MiB, frees it, allocates it again, and prints the bytes glibc holds in mmap'd blocks
# while the second block is alive (mallinfo2's hblkhd): with the default settings the block is
# mapped from the OS; with freed memory kept it comes from the heap.
PROBE = """
import ctypes, sys
from mobilenets.device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
libc.free(libc.malloc(size))
block = libc.malloc(size)
print(applied, libc.mallinfo2().hblkhd >= size)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc")
def test_keep_freed_memory_serves_large_blocks_from_the_heap() -> None:
    def probe(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout

    assert probe("default").split() == ["None", "True"]  # glibc maps a 64 MiB block from the OS
    assert probe("keep").split() == ["True", "False"]
