import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests share 2 cores with everything else; keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("PHYSGEN_TEST_THREADS", "1")))
# ... and the processes tests start (CLI subprocesses, gpu_check's children, demo workers) inherit one OpenMP thread too:
# with pytest-xdist every core already runs a worker, and an OpenMP team of two whose second thread waits for a busy core
# slows small ops ten- to a hundredfold (CI: gpu_check's smoke `sample` section, 3 s alone, timed out after 240 s).
os.environ["OMP_NUM_THREADS"] = os.environ.get("PHYSGEN_TEST_THREADS", "1")
settings.register_profile("physgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
# CI (.ci/run sets CI=true) draws the same examples every run, so what passed here passes there; a local run
# draws fresh ones and keeps exploring (a float32 tolerance found that way: tests/nets/test_mlp.py).
settings.register_profile("ci", parent=settings.get_profile("physgen"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "physgen")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    networks run fastest on one, and bit-exact comparisons need one thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
