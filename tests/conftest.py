import importlib
import os

import pytest
import torch

# Tests run on 2 cores with `-n 2`: one torch thread per worker keeps them honest.
torch.set_num_threads(int(os.environ.get("REGULAB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


def native_op():
    """The C++ dropout op's module. Skips only where the environment turned it off
    (REGULAB_NATIVE=0) or has no C++ compiler (``make`` installs one); with a compiler, a
    build that fails fails the tests that need it."""
    import shutil

    from regulab.ops import _native

    if not _native.enabled():
        pytest.skip("REGULAB_NATIVE=0: the C++ dropout op is off")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler: dropout runs on the numba kernel")
    module = _native.load()
    assert module is not None, "the C++ dropout op did not build (see the RuntimeWarning)"
    return module


@pytest.fixture(params=["native", "numba"])
def eager_path(request, monkeypatch):
    """Runs a test on each of eager dropout's two training paths: the C++ op and the numba kernel
    under an ``autograd.Function`` (the path of a machine without a C++ compiler)."""
    dropout_module = importlib.import_module("regulab.ops.dropout")

    fn = native_op().dropout if request.param == "native" else dropout_module._no_native
    monkeypatch.setattr(dropout_module, "_native_dropout", fn)
    return request.param


@pytest.fixture
def native():
    """The C++ dropout op's module (see :func:`native_op`)."""
    return native_op()
