"""Numba's cache saves hold a lock on their directory (compiler/codegen/numba_cache_lock.py), so two processes that
first compile signatures of one function at once cannot pair an index entry with the other's machine code."""

import subprocess
import sys
import time

import pytest
from numba.core.caching import IndexDataCacheFile

from compiler.codegen.numba_cache_lock import directory_lock, install  # importing compiler.codegen installs it

pytest.importorskip("fcntl")  # the lock is POSIX-only (nothing is changed on Windows)

CHILD = r"""
import sys
import compiler.codegen  # installs the lock
from numba.core.caching import IndexDataCacheFile

f = IndexDataCacheFile(sys.argv[1], "fn", ("stamp", 1))
print("ready", flush=True)
f.save(("sig", 2), ("code", 2))
assert f.load(("sig", 2)) == ("code", 2) and f.load(("sig", 1)) == ("code", 1)
print("saved", flush=True)
"""


def test_install_wraps_numba_saves_once():
    before = IndexDataCacheFile.save
    assert before.symdl_locked
    assert install() and IndexDataCacheFile.save is before  # a second install changes nothing


def test_a_save_waits_while_another_process_holds_the_directory(tmp_path):
    IndexDataCacheFile(str(tmp_path), "fn", ("stamp", 1)).save(("sig", 1), ("code", 1))
    with directory_lock(str(tmp_path)):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"  # the child is about to save
            time.sleep(0.5)  # an unguarded save takes milliseconds
            assert child.poll() is None, "the save did not wait for the directory lock"
        except BaseException:
            child.kill()
            raise
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and out.strip() == "saved"
    # both entries survive, each with its own data
    f = IndexDataCacheFile(str(tmp_path), "fn", ("stamp", 1))
    assert f.load(("sig", 1)) == ("code", 1) and f.load(("sig", 2)) == ("code", 2)
