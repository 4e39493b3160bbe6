// regulab's eager CPU dropout as one C++ call: seed draw, kernel and autograd node.
//
// The same counter-based bits as regulab/ops/_rng.py (the reference) and the numba kernel in
// _kernels.py; tests check all three bit for bit. A training step calls dropout once per layer
// forward and once per layer backward, and in Python each call costs ~0.1 ms of interpreter,
// numba dispatch and autograd.Function overhead around a kernel of about that length. Here
// the whole call is C++: the seed is drawn with the same op as draw_seed_int
// (random_(-2^63, 2^63-1) on torch's generator), the autograd node saves only the seed and
// two scalars, and backward runs the same kernel on the gradient without entering Python.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

namespace {

constexpr uint32_t kM1 = 0x7FEB352Du, kM2 = 0x846CA68Bu, kGolden = 0x9E3779B9u;
constexpr int kRunShift = 6;
constexpr int64_t kRun = int64_t{1} << kRunShift;   // counters per run (_rng.RUN)
constexpr int64_t kBlock = int64_t{1} << 15;        // elements per parallel work item (_kernels.BLOCK)
constexpr int64_t kParallelMin = int64_t{1} << 16;  // serial below (_kernels.PARALLEL_MIN)

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= kM1;
  x ^= x >> 15;
  x *= kM2;
  return x ^ (x >> 16);
}

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct Keys {
  uint32_t k0, k1;
};

inline Keys seed_keys(int64_t seed) {  // _rng.mix_seed(seed, stream=0)
  const uint64_t z = splitmix64(static_cast<uint64_t>(seed) ^ splitmix64(0));
  return {static_cast<uint32_t>(z), static_cast<uint32_t>(z >> 32)};
}

inline uint32_t run_key(uint64_t i, Keys k) {  // the key of the run holding counter i
  const uint64_t r = i >> kRunShift;
  const uint32_t hk = static_cast<uint32_t>(r >> 32) * kGolden ^ k.k1;
  return mix32(mix32(static_cast<uint32_t>(r) ^ k.k0) + hk);
}

inline uint32_t word_at(uint64_t i, Keys k) {
  return mix32(run_key(i, k) + static_cast<uint32_t>(i & (kRun - 1)) * kGolden);
}

// out[j] = x[j]*s if bits(start + j) >= t else x[j]*0, for j < n. x*0 (not a literal 0) keeps
// NaN, inf and -0.0 as torch has them. Whole runs take the key once and vectorise their lanes.
template <typename T>
void masked_span(const T* __restrict x, T* __restrict out, uint64_t start, int64_t n, Keys k, uint32_t t, T s) {
  const T z = T(0);
  const int64_t head = std::min<int64_t>(n, static_cast<int64_t>((0 - start) & (kRun - 1)));
  const int64_t end = head + (n - head) / kRun * kRun;
  for (int64_t j = 0; j < head; ++j) out[j] = x[j] * (word_at(start + j, k) >= t ? s : z);
  for (int64_t c = head; c < end; c += kRun) {
    const uint32_t key = run_key(start + c, k);
    const T* __restrict xc = x + c;
    T* __restrict oc = out + c;
#pragma GCC ivdep
    for (int l = 0; l < kRun; ++l) {
      const uint32_t w = mix32(key + static_cast<uint32_t>(l) * kGolden);
      oc[l] = xc[l] * (w >= t ? s : z);
    }
  }
  for (int64_t j = end; j < n; ++j) out[j] = x[j] * (word_at(start + j, k) >= t ? s : z);
}

// The kernel over n contiguous elements, counters base.., parallel over blocks from kParallelMin.
template <typename T>
void masked_scale_kernel(const T* x, T* out, int64_t n, int64_t seed, uint32_t t, T s, int64_t base) {
  const Keys k = seed_keys(seed);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  auto work = [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t st = b * kBlock, sp = std::min(n, st + kBlock);
      masked_span<T>(x + st, out + st, static_cast<uint64_t>(base + st), sp - st, k, t, s);
    }
  };
  if (n < kParallelMin) {
    work(0, blocks);
  } else {
    at::parallel_for(0, blocks, 1, work);
  }
}

// A plain strided CPU float32/float64 tensor with memory of its own: not nested, not a wrapper
// (functorch's batched gradients of autograd.grad(is_grads_batched=True) have no storage).
bool served(const at::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         x.layout() == at::kStrided && !x.is_nested() && x.has_storage();
}

// The masked, scaled copy of x (any strides, a negative view too). Counters follow x's logical
// (row-major) order; the result is laid out as torch's elementwise ops lay out theirs: like x when x
// is dense (channels_last, transposed), row-major otherwise.
at::Tensor masked_new(const at::Tensor& x, int64_t seed, uint32_t t, double scale, int64_t base = 0) {
  const at::Tensor xc = (x.is_neg() ? x.resolve_neg() : x).contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t n = xc.numel();
  if (xc.scalar_type() == at::kFloat) {
    masked_scale_kernel<float>(xc.const_data_ptr<float>(), out.mutable_data_ptr<float>(), n, seed, t,
                               static_cast<float>(scale), base);
  } else {
    masked_scale_kernel<double>(xc.const_data_ptr<double>(), out.mutable_data_ptr<double>(), n, seed, t, scale, base);
  }
  if (!x.is_contiguous()) {
    at::Tensor like = at::empty_like(x);
    if (!like.is_contiguous()) return like.copy_(out);
  }
  return out;
}

// (drop threshold, scale) of a rate, as _rng.keep_threshold and dropout._scalar_scales compute
// them: the scale is torch's own ones(dtype).div_(1 - p), so kept values match torch bit for bit.
struct Rate {
  double p = -1.0;
  at::ScalarType dtype = at::kFloat;
  uint32_t thresh = 0;
  double scale = 0.0;
};

Rate compute_rate(double p, at::ScalarType dtype) {
  Rate r;
  r.p = p;
  r.dtype = dtype;
  const double t = std::nearbyint(p * 4294967296.0);  // round half to even, as Python's round
  r.thresh = static_cast<uint32_t>(std::min(t, 4294967295.0));
  at::AutoDispatchBelowADInplaceOrView guard;  // a plain computation, never recorded
  r.scale = at::ones({1}, at::TensorOptions().dtype(dtype)).div_(1.0 - p).item<double>();
  return r;
}

// A few rates per thread: a model's layers use one or several, every step.
const Rate& rate_of(double p, at::ScalarType dtype) {
  constexpr int kSlots = 8;
  thread_local Rate slots[kSlots];
  thread_local int next = 0;
  for (const Rate& r : slots) {
    if (r.p == p && r.dtype == dtype) return r;
  }
  Rate& slot = slots[next];
  next = (next + 1) % kSlots;
  slot = compute_rate(p, dtype);
  return slot;
}

int64_t draw_seed(const std::optional<at::Generator>& generator) {  // _rng.draw_seed_int
  at::Tensor t = at::empty({1}, at::TensorOptions().dtype(at::kLong));
  t.random_(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), generator);
  return t.const_data_ptr<int64_t>()[0];
}

struct MaskedScale : public torch::autograd::Function<MaskedScale> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t seed,
                            int64_t thresh, double scale) {
    ctx->saved_data["seed"] = seed;  // only scalars: no mask, no tensor
    ctx->saved_data["thresh"] = thresh;
    ctx->saved_data["scale"] = scale;
    return masked_new(x, seed, static_cast<uint32_t>(thresh), scale);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const int64_t seed = ctx->saved_data["seed"].toInt(), thresh = ctx->saved_data["thresh"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor& grad = grads[0];
    // Linear in x: the backward is the op itself (recorded when create_graph asks for it).
    if (served(grad)) return {MaskedScale::apply(grad, seed, thresh, scale), at::Tensor(), at::Tensor(), at::Tensor()};
    // Any other gradient (sparse from an embedding, batched, ...): times the mask, as a tensor of
    // 0 and 1/(1 - p) made by the kernel from ones; torch's own ops then keep its layout.
    at::Tensor mask;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      mask = masked_new(at::ones(grad.sizes(), at::TensorOptions().dtype(grad.scalar_type())), seed,
                        static_cast<uint32_t>(thresh), scale);
    }
    return {grad.mul(mask), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Training-mode dropout of x at rate p in (0, 1), or None when x is not a strided CPU
// float32/float64 tensor (the caller then takes its general path).
std::optional<at::Tensor> dropout(const at::Tensor& x, double p, const std::optional<at::Generator>& generator) {
  TORCH_CHECK(p > 0.0 && p < 1.0, "dropout: p in (0, 1) on this path, got ", p);
  if (!served(x)) return std::nullopt;
  const Rate& r = rate_of(p, x.scalar_type());
  const double scale = r.scale;
  const int64_t thresh = r.thresh;
  return MaskedScale::apply(x, draw_seed(generator), thresh, scale);
}

// The bare kernel (tests: against the torch reference, at any counter base).
at::Tensor masked_scale(const at::Tensor& x, int64_t seed, int64_t thresh, double scale, int64_t base) {
  TORCH_CHECK(served(x), "masked_scale: a strided CPU float32/float64 tensor, got ", x.toString());
  TORCH_CHECK(thresh >= 0 && thresh <= 4294967295LL, "masked_scale: thresh in [0, 2^32), got ", thresh);
  TORCH_CHECK(base >= 0, "masked_scale: base >= 0, got ", base);
  at::AutoDispatchBelowADInplaceOrView guard;
  return masked_new(x, seed, static_cast<uint32_t>(thresh), scale, base);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The GIL is released around the call (as torch's own ops do): other Python threads run meanwhile.
  m.def("dropout", &dropout, "training-mode dropout of a CPU float32/float64 tensor, or None",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("masked_scale", &masked_scale, "the bare kernel", pybind11::call_guard<pybind11::gil_scoped_release>());
}
