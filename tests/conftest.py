import pytest
import torch

# Two cores are shared by the xdist workers: one intra-op thread each avoids
# oversubscription, which slows small convolutions by an order of magnitude.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # every test starts seeded and on one thread, whatever the previous one left
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
