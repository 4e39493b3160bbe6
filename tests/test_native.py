"""The C++ dropout op (``regulab.ops._native``): bit for bit the torch reference, the same draws,
values and gradients as the numba path, its fallbacks, and its build."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import regulab
from regulab.ops import _native, _rng
dropout_module = importlib.import_module("regulab.ops.dropout")
from regulab.ops.dropout import _scalar_scales, masked_scale_ref

_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _bits_equal(a, b):
    """Equal to the bit: NaN payloads and the sign of zero included."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(_INT[a.dtype]), b.view(_INT[b.dtype]))


def _kernel(native, x, seed, p, base=0):
    thresh, scale = _scalar_scales(p, x.dtype)
    return native.masked_scale(x, seed, int(thresh[0]), float(scale), base)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 2**15 + 17, 2**16 + 12345])  # runs' heads/tails; serial and parallel
def test_kernel_equals_reference_bit_for_bit(native, threads, dtype, n):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, dtype=dtype)
        for p, seed in [(0.1, 5), (0.37, -(2**63)), (0.9, 2**63 - 1)]:
            assert _bits_equal(_kernel(native, x, seed, p), masked_scale_ref(x, seed, p)), (p, seed)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("base", [2**31 - 1000, 2**32 - 40000, 2**33 + 7, 2**40 - 5])
def test_64_bit_counters_equal_reference(native, base):
    n = 2**16 + 7
    x = torch.randn(n)
    keep = _rng.bits_ref(42, base, n) >= _rng.keep_threshold(0.5)
    assert _bits_equal(_kernel(native, x, 42, 0.5, base), x * torch.where(keep, 2.0, 0.0))


def test_dropped_values_are_x_times_zero(native):
    # x·0, not a literal 0: NaN stays NaN, inf becomes NaN, negatives give -0.0 (as torch's dropout)
    x = torch.tensor([float("nan"), float("inf"), -1.5, 2.0] * 1000)
    assert _bits_equal(_kernel(native, x, 9, 0.5), masked_scale_ref(x, 9, 0.5))
    y = _kernel(native, x, 9, 0.5)
    dropped = (y[2::4] == 0)
    assert dropped.any() and torch.signbit(y[2::4][dropped]).all()


def test_extreme_thresholds(native):
    x = torch.randn(5000)
    assert _bits_equal(native.masked_scale(x, 1, 0, 2.0, 0), x * 2.0)  # threshold 0 keeps all
    y = native.masked_scale(x, 1, 2**32 - 1, 2.0, 0)  # only the word 2^32-1 survives
    keep = _rng.bits_ref(1, 0, 5000) >= 2**32 - 1
    assert _bits_equal(y, x * torch.where(keep, 2.0, 0.0))
    with pytest.raises(RuntimeError, match=r"thresh in \[0, 2\^32\), got 4294967296"):
        native.masked_scale(x, 1, 2**32, 2.0, 0)


@pytest.mark.parametrize("make", [
    lambda: torch.randn(64, 48).t(),
    lambda: torch.randn(7).expand(5, 7),
    lambda: torch.randn(()),
    lambda: torch.randn(3, 5, dtype=torch.complex64).conj().imag,  # a negative view, strided
    lambda: torch.randn((), dtype=torch.complex128).conj().imag,  # a negative view, contiguous
])
def test_any_stride_and_negative_views(eager_path, make):
    x = make()
    torch.manual_seed(3)
    y = regulab.ops.dropout(x, 0.4)
    torch.manual_seed(3)
    want = masked_scale_ref(x.resolve_neg(), int(_rng.draw_seed()), 0.4)
    assert _bits_equal(y, want) and y.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_generator", [False, True])
def test_same_draws_values_and_gradients_as_the_numba_path(native, monkeypatch, dtype, use_generator):
    x = torch.randn(3, 70000, dtype=dtype, requires_grad=True)  # the parallel kernels
    w = torch.randn(3, 70000, dtype=dtype)

    def run():
        torch.manual_seed(17)
        g = torch.Generator().manual_seed(5) if use_generator else None
        y = regulab.ops.dropout(x, 0.3, generator=g)
        x.grad = None
        (y * w).sum().backward()
        return y.detach(), x.grad.clone(), torch.get_rng_state(), g.get_state() if g else None

    monkeypatch.setattr(dropout_module, "_native_dropout", native.dropout)
    a = run()
    monkeypatch.setattr(dropout_module, "_native_dropout", dropout_module._no_native)
    b = run()
    assert _bits_equal(a[0], b[0]) and _bits_equal(a[1], b[1])
    assert torch.equal(a[2], b[2])  # one draw from the default generator, or none
    assert (a[3] is None and b[3] is None) or torch.equal(a[3], b[3])


def test_node_holds_no_tensor_and_backward_twice_and_double_backward(native):
    x = torch.randn(200, dtype=torch.float64, requires_grad=True)
    y = native.dropout(x, 0.5, None)
    assert type(y.grad_fn).__name__ == "CppFunction"
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True, create_graph=True)
    (gx2,) = torch.autograd.grad(y, x, torch.ones_like(y))  # the graph was retained: same mask again
    assert _bits_equal(gx.detach(), gx2) and _bits_equal(gx.detach(), (y != 0).double() * 2)
    v = torch.randn(200, dtype=torch.float64, requires_grad=True)
    (gv,) = torch.autograd.grad(y, x, v, create_graph=True)  # gv = mask·2·v: differentiable in v
    (ggv,) = torch.autograd.grad(gv.sum(), v)
    assert _bits_equal(ggv, (y != 0).double() * 2)


def test_unserved_tensors_return_none_and_bad_p_raises(native):
    for x in (torch.randn(8, dtype=torch.bfloat16), torch.randn(8, dtype=torch.float16),
              torch.empty(8, device="meta"), torch.randn(8).to_sparse()):
        assert native.dropout(x, 0.5, None) is None, x.dtype
    for p in (0.0, 1.0, float("nan"), -0.5):
        with pytest.raises(RuntimeError, match=r"dropout: p in \(0, 1\) on this path, got"):
            native.dropout(torch.randn(8), p, None)


def test_half_dtypes_still_take_the_general_path(eager_path):
    x = torch.randn(4000, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(2)
    y = regulab.ops.dropout(x, 0.5)
    y.sum().backward()
    torch.manual_seed(2)
    assert torch.equal(y, masked_scale_ref(x.detach(), int(_rng.draw_seed()), 0.5))
    assert torch.equal(x.grad, (y != 0).to(x.dtype) * 2)


def test_compiler_flags_follow_torchs_instruction_set(monkeypatch):
    names = set()
    for cap, tag, present, absent in [("AVX512", "avx512", "-mavx512f", ""), ("AVX512_VNNI", "avx512", "-mavx512bw", ""),
                                      ("AVX2", "avx2", "-mavx2", "-mavx512f"), ("DEFAULT", "generic", "-O3", "-m")]:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda cap=cap: cap)
        got, flags = _native._flags()
        assert got == tag and present in flags and "-fopenmp" in flags, (cap, got, flags)
        assert not (absent and any(f.startswith(absent) for f in flags)), (cap, flags)
        assert _native.build_name().startswith(f"regulab_native_{tag}_")
        names.add(_native.build_name())
    assert len(names) == 3  # one build per instruction set: never another machine's code


def test_a_failed_build_warns_and_dropout_falls_back(monkeypatch):
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):
        raise OSError("c++: command not found")

    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.warns(RuntimeWarning, match=r"C\+\+ dropout op could not be built \(OSError: c\+\+: command not "
                                            r"found\); dropout runs on the numba kernel"):
        assert _native._build() is None


def test_the_build_finds_the_ninja_package_without_an_activated_environment(monkeypatch):
    import ninja
    from torch.utils import cpp_extension

    seen = []
    monkeypatch.setattr(cpp_extension, "load", lambda *a, **k: seen.append(os.environ["PATH"]) or "built")
    monkeypatch.setenv("PATH", "/usr/bin")
    assert _native._build() == "built"
    assert seen == [ninja.BIN_DIR + os.pathsep + "/usr/bin"] and os.environ["PATH"] == "/usr/bin"


def _run(code, timeout=600, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


_STEP = ("import torch, regulab\n"
         "torch.manual_seed(0)\n"
         "x = torch.randn(5000, requires_grad=True)\n"
         "y = regulab.ops.dropout(x, 0.5); y.sum().backward()\n"
         "import sys; d = sys.modules['regulab.ops.dropout']\n"
         "assert d._native_dropout is d._no_native\n"
         "print(int((y != 0).sum()), float(y.sum()), float(x.grad.sum()))\n")


def test_without_a_compiler_dropout_runs_on_numba_with_the_same_values(tmp_path):
    code = _STEP
    broken = _run(code, CXX="/nonexistent/c++", TORCH_EXTENSIONS_DIR=str(tmp_path))
    assert broken.returncode == 0, broken.stderr[-2000:]
    assert "building the C++ dropout op for this machine" in broken.stderr  # an empty cache: it says so
    assert "C++ dropout op could not be built" in broken.stderr
    off = _run(code, REGULAB_NATIVE="0")
    assert off.returncode == 0 and "could not be built" not in off.stderr, off.stderr[-2000:]
    assert broken.stdout == off.stdout


def test_a_process_with_the_op_draws_the_same_mask_and_gradient(native):
    off = _run(_STEP, REGULAB_NATIVE="0")
    on = _run(_STEP.replace("is d._no_native", "is not d._no_native"))
    assert off.returncode == 0 and on.returncode == 0, (off.stderr[-2000:], on.stderr[-2000:])
    assert "building" not in on.stderr  # built already (the fixture loaded it)
    assert on.stdout == off.stdout  # same draw, same mask, same gradient


def test_build_command(native, capsys, monkeypatch):
    from regulab.cli import main

    assert main(["build"]) == 0
    assert "C++ dropout op ready" in capsys.readouterr().out
    monkeypatch.setenv("REGULAB_NATIVE", "0")
    assert main(["build"]) == 0
    assert "REGULAB_NATIVE=0" in capsys.readouterr().out


def test_many_rates_in_turn_keep_their_own_scale_and_threshold(native):
    # the op caches a few (rate, dtype) pairs per thread: more rates than slots, in turn, twice
    x = torch.randn(4000, dtype=torch.float64)
    rates = [0.05 * k for k in range(1, 12)]
    for _ in range(2):
        for p in rates:
            for dtype in (torch.float32, torch.float64):
                xd = x.to(dtype)
                torch.manual_seed(8)
                y = native.dropout(xd, p, None)
                torch.manual_seed(8)
                assert _bits_equal(y, masked_scale_ref(xd, int(_rng.draw_seed()), p)), (p, dtype)


def test_a_numpy_rate_takes_the_op_too(native):
    import numpy as np

    x = torch.randn(3000, requires_grad=True)
    torch.manual_seed(6)
    a = regulab.ops.dropout(x, 0.3)
    torch.manual_seed(6)
    b = regulab.ops.dropout(x, np.float64(0.3))  # validated first, then the same call
    assert type(b.grad_fn).__name__ == "CppFunction" and _bits_equal(a, b)


def test_a_build_killed_midway_does_not_hang_the_next_process(native, tmp_path):
    # torch's builder leaves <build dir>/lock behind when it is killed (a Ctrl-C during the first
    # call's build) and a later process would wait on it forever; regulab's own lock clears it
    import shutil

    built = Path(native.__file__).parent
    shutil.copytree(built, tmp_path / built.name)  # mtimes kept: nothing to rebuild
    (tmp_path / built.name / "lock").touch()
    on = _run(_STEP.replace("is d._no_native", "is not d._no_native"), TORCH_EXTENSIONS_DIR=str(tmp_path),
              timeout=120)
    assert on.returncode == 0, on.stderr[-2000:]
    assert not (tmp_path / built.name / "lock").exists()
