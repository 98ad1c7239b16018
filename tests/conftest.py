import os

import torch
from hypothesis import HealthCheck, settings

# Tests share 2 cores with everything else; keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("PHYSGEN_TEST_THREADS", "1")))
settings.register_profile("physgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("physgen")
