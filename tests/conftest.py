import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests share 2 cores with everything else; keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("PHYSGEN_TEST_THREADS", "1")))
settings.register_profile("physgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("physgen")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    networks run fastest on one, and bit-exact comparisons need one thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
