"""symdl's thread settings (see symdl/_threads.py): spinning OpenMP threads must not starve BLAS."""

import os
import subprocess
import sys

import pytest


def _config(pre_import: str, env: dict | None = None) -> str:
    code = f"{pre_import}\nimport symdl, os\nprint(symdl._THREADS_CONFIG, '|', os.environ.get('NUMBA_THREADING_LAYER'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_no_openmp_loaded_yet_turns_spinning_off():
    assert _config("").startswith("GOMP_SPINCOUNT=0")


def test_other_libgomp_copies_do_not_count():
    pytest.importorskip("sklearn")
    assert _config("import sklearn.linear_model").startswith("GOMP_SPINCOUNT=0")


def test_openmp_loaded_first_switches_numba_to_workqueue():
    pytest.importorskip("torch")
    assert _config("import torch").endswith("| workqueue")
