import os
from collections.abc import Iterator
from pathlib import Path

import pyro
import pytest
import torch
from helpers import REPO, Mirror


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data directory (``LNF_DATA_DIR``, as CI sets it, else ``../shared/data``)."""
    explicit = os.environ.get("LNF_DATA_DIR")
    path = Path(explicit or REPO.parent / "shared" / "data").resolve()
    if not path.is_dir():
        if explicit:  # asked for and missing: a broken set-up, not a reason to skip
            pytest.fail(f"LNF_DATA_DIR={explicit} is not a directory")
        pytest.skip(f"data directory {path} not present")
    return path


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts with an empty parameter store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    """A loopback HTTP server serving in-memory files (``mirror.serve(name, body)``)."""
    m = Mirror()
    m.thread.start()
    yield m
    m.httpd.shutdown()
    m.httpd.server_close()
    m.thread.join()


def pytest_configure(config):
    # Test models are tiny: one thread beats two (thread start-up dominates), and CI has
    # only two cores.
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """For tiny models: a second intra-op thread only adds synchronisation, which on a
    shared 2-core machine costs several times the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

