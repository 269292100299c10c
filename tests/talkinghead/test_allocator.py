"""talkinghead.allocator: on glibc freed memory stays in the process (the step-time fix), unless opted out."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

# Allocates and frees a 64 MiB tensor, then prints whether the thresholds are in force and how many MiB of
# resident memory the free handed back to the system.
PROBE = """
import os, torch
from talkinghead.allocator import retain_freed_memory
applied = retain_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = torch.ones(16 * 2**20)
held = rss()
del block
print(applied, round(held - rss()))
"""


def probe(**env: str) -> tuple[bool, int]:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    applied, returned = result.stdout.split()
    return applied == "True", int(returned)


def test_freed_blocks_stay_mapped_for_the_next_step():
    applied, returned = probe()
    assert applied and returned < 8, f"{returned} MiB went back to the system"


def test_talkinghead_malloc_system_keeps_glibc_defaults():
    applied, returned = probe(TALKINGHEAD_MALLOC="system")
    assert not applied and returned > 56, f"only {returned} MiB went back to the system"
