import os

import pytest
import torch

# Tests run on 2 cores with `-n 2`: one torch thread per worker keeps them honest.
torch.set_num_threads(int(os.environ.get("REGULAB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield
