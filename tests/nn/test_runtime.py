"""keep_freed_memory: freed large tensors stay in the process instead of going back to the
kernel (so the next one reuses pages rather than faulting in fresh ones)."""

import subprocess
import sys

import pytest

_RETAINED = """
import sys, torch
from pyro_lnf.nn.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmRSS"))
before = rss()
x = torch.ones(16 * 2**20)  # 64 MiB, every page touched
del x
print((rss() - before) / 2**20)
"""


def _retained_mib(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RETAINED, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux with glibc")
def test_freed_large_tensor_stays_in_the_process_only_when_asked():
    assert _retained_mib("default") < 16  # glibc unmaps a freed 64 MiB block at once
    assert _retained_mib("keep") > 48  # ... and keeps it when told to

