// The lstm time loop of popdyn.recurrence as two XLA FFI custom calls for the CPU (popdyn/fused.py).
//
// XLA runs the lstm's time loop as separate ops per step — one matmul, element-wise fusions, one
// dynamic-update-slice per saved array — and on a CPU those cost as much as the step's matmul again
// (benchmarks/README.md).  Here one call runs the whole loop: per step one sgemm (OpenBLAS, one thread)
// and one vectorised pass over the gates for sigma, the activation and the cell update.
//
// Same equations and parameter layout as popdyn/recurrence.py: the stacked kernel K = [W; U; b] has
// R = N + M + 1 rows and G = 4N columns in gate blocks (i, f, o, c); a step is
//   a = [h; x; 1] K,  i, f, o = sigma(a_i, a_f, a_o),  g = act(a_c),  c_new = f c + i g,
//   h' = m o act(c_new),  c' = m c_new,
// with a 0/1 mask m per (batch row, step).  Every array of one network is row-major:
//   x [B, T, M], mask [B, T], h0, c0 [B, N]  ->  hs, cs [B, T, N]  (the states),
//   and the residuals for the backward call: acts [T, B, G] (the activated gates), zs [T, B, R]
//   (z_t = [h_{t-1}, x_t, 1]), tc [T, B, N] (act(c_new)).
// The backward call runs the reversed loop for the state and gate cotangents (one sgemm per step) and
// then the kernel's gradient as one sgemm over every step and batch row, dK = sum_t z_t^T da_t.
// Leading batch dimensions (a vmapped population) are looped over.
//
// Built by popdyn/fused.py with the flags it names (-O3 -march=native); the loops below are written so
// that the compiler vectorises them: the exponential is a branch-free Cephes polynomial rather than libm's
// expf (a call per element).

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for float32, |relative error| < 2 ulp on [-87, 88]: x = k ln2 + r, |r| <= ln2/2, e^r by the
// Cephes expf polynomial, 2^k by the exponent bits.  Branch-free so that a loop over it vectorises.
inline float exp_f(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

// tanh: (1 - e) / (1 + e) with e = exp(-2|x|), and its Taylor series below |x| = 0.1 where 1 - e would
// lose digits; the sign put back.
inline float tanh_f(float x) {
  const float ax = std::fabs(x);
  const float e = exp_f(-2.0f * ax);
  const float big = (1.0f - e) / (1.0f + e);
  const float x2 = ax * ax;
  const float small = ax * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
  const float t = ax < 0.1f ? small : big;
  return std::copysign(t, x);
}

// the cell's activation, and its derivative as a function of its output y
template <bool kRelu>
inline float act_f(float x) {
  if constexpr (kRelu) return std::max(x, 0.0f);
  return tanh_f(x);
}

template <bool kRelu>
inline float dact_f(float y) {
  if constexpr (kRelu) return y > 0.0f ? 1.0f : 0.0f;
  return 1.0f - y * y;
}

void one_thread() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

struct Dims {
  int64_t members, B, T, M, N, G, R;
};

ffi::Error dims_of(ffi::Span<const int64_t> k, ffi::Span<const int64_t> x, Dims* d) {
  if (k.size() < 2 || x.size() < 3) return ffi::Error::InvalidArgument("popdyn lstm: bad ranks");
  d->R = k[k.size() - 2];
  d->G = k[k.size() - 1];
  d->B = x[x.size() - 3];
  d->T = x[x.size() - 2];
  d->M = x[x.size() - 1];
  d->N = d->G / 4;
  if (d->G != 4 * d->N || d->R != d->N + d->M + 1)
    return ffi::Error::InvalidArgument("popdyn lstm: kernel is not [N + M + 1, 4N]");
  d->members = 1;
  for (size_t i = 0; i + 3 < x.size(); ++i) d->members *= x[i];
  return ffi::Error::Success();
}

template <bool kRelu>
void forward(const Dims& d, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mask,
                ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                ffi::ResultBuffer<ffi::F32> cs, ffi::ResultBuffer<ffi::F32> acts,
                ffi::ResultBuffer<ffi::F32> zs, ffi::ResultBuffer<ffi::F32> tc) {
  const int64_t B = d.B, T = d.T, M = d.M, N = d.N, G = d.G, R = d.R;
  for (int64_t p = 0; p < d.members; ++p) {
    const float* K = k.typed_data() + p * R * G;
    const float* X = x.typed_data() + p * B * T * M;
    const float* MK = mask.typed_data() + p * B * T;
    const float* H0 = h0.typed_data() + p * B * N;
    const float* C0 = c0.typed_data() + p * B * N;
    float* HS = hs->typed_data() + p * B * T * N;
    float* CS = cs->typed_data() + p * B * T * N;
    float* A = acts->typed_data() + p * T * B * G;
    float* Z = zs->typed_data() + p * T * B * R;
    float* TC = tc->typed_data() + p * T * B * N;
    for (int64_t t = 0; t < T; ++t) {
      float* a = A + t * B * G;
      float* z = Z + t * B * R;
      // a = [h_{t-1}, x_t, 1] K: one sgemm; z_t is kept for the weight gradient
      for (int64_t b = 0; b < B; ++b) {
        float* zb = z + b * R;
        std::memcpy(zb, t == 0 ? H0 + b * N : HS + (b * T + t - 1) * N, N * sizeof(float));
        std::memcpy(zb + N, X + (b * T + t) * M, M * sizeof(float));
        zb[N + M] = 1.0f;
      }
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, R, 1.0f, z, R, K, G, 0.0f, a, G);
      for (int64_t b = 0; b < B; ++b) {
        float* ab = a + b * G;
#pragma omp simd
        for (int64_t j = 0; j < 3 * N; ++j) ab[j] = sigmoid_f(ab[j]);
#pragma omp simd
        for (int64_t j = 3 * N; j < G; ++j) ab[j] = act_f<kRelu>(ab[j]);
        const float m = MK[b * T + t];
        const float* cprev = t == 0 ? C0 + b * N : CS + (b * T + t - 1) * N;
        float* hb = HS + (b * T + t) * N;
        float* cb = CS + (b * T + t) * N;
        float* tcb = TC + (t * B + b) * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const float c = ab[N + n] * cprev[n] + ab[n] * ab[3 * N + n];
          const float tcn = act_f<kRelu>(c);
          tcb[n] = tcn;
          hb[n] = m * (ab[2 * N + n] * tcn);
          cb[n] = m * c;
        }
      }
    }
  }
}

template <bool kRelu>
void backward(const Dims& d, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> acts,
              ffi::Buffer<ffi::F32> zs, ffi::Buffer<ffi::F32> tc, ffi::Buffer<ffi::F32> gh,
              ffi::Buffer<ffi::F32> gc, ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dh0,
              ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> da) {
  const int64_t B = d.B, T = d.T, N = d.N, G = d.G, R = d.R;
  for (int64_t p = 0; p < d.members; ++p) {
    const float* K = k.typed_data() + p * R * G;
    const float* MK = mask.typed_data() + p * B * T;
    const float* C0 = c0.typed_data() + p * B * N;
    const float* CS = cs.typed_data() + p * B * T * N;
    const float* A = acts.typed_data() + p * T * B * G;
    const float* Z = zs.typed_data() + p * T * B * R;
    const float* TC = tc.typed_data() + p * T * B * N;
    const float* GH = gh.typed_data() + p * B * T * N;
    const float* GC = gc.typed_data() + p * B * T * N;
    float* DK = dk->typed_data() + p * R * G;
    float* DH = dh0->typed_data() + p * B * N;  // running dL/dh_{t-1} (from the later steps)
    float* DC = dc0->typed_data() + p * B * N;
    float* DA = da->typed_data() + p * T * B * G;
    std::fill(DH, DH + B * N, 0.0f);
    std::fill(DC, DC + B * N, 0.0f);
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* a = A + t * B * G;
      float* dat = DA + t * B * G;
      for (int64_t b = 0; b < B; ++b) {
        const float m = MK[b * T + t];
        const float* ab = a + b * G;
        float* db = dat + b * G;
        const float* cprev = t == 0 ? C0 + b * N : CS + (b * T + t - 1) * N;
        const float* tcb = TC + (t * B + b) * N;
        const float* ghb = GH + (b * T + t) * N;
        const float* gcb = GC + (b * T + t) * N;
        float* dhb = DH + b * N;
        float* dcb = DC + b * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const float i = ab[n], f = ab[N + n], o = ab[2 * N + n], g = ab[3 * N + n];
          const float tcn = tcb[n];
          const float dh = m * (ghb[n] + dhb[n]);
          const float dc = m * (gcb[n] + dcb[n]) + dh * o * dact_f<kRelu>(tcn);
          db[n] = dc * g * i * (1.0f - i);
          db[N + n] = dc * cprev[n] * f * (1.0f - f);
          db[2 * N + n] = dh * tcn * o * (1.0f - o);
          db[3 * N + n] = dc * i * dact_f<kRelu>(g);
          dcb[n] = dc * f;
        }
      }
      // dL/dh_{t-1} = da_t W^T
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, N, G, 1.0f, dat, G, K, G, 0.0f, DH, N);
    }
    // dK = sum_t z_t^T da_t (recurrent, input and bias rows together): one sgemm over every step and row
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, G, T * B, 1.0f, Z, R, DA, G, 0.0f, DK, G);
  }
}

ffi::Error LstmForwardImpl(ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mask,
                           ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                           ffi::ResultBuffer<ffi::F32> cs, ffi::ResultBuffer<ffi::F32> acts,
                           ffi::ResultBuffer<ffi::F32> zs, ffi::ResultBuffer<ffi::F32> tc,
                           int32_t relu) {
  Dims d;
  if (auto e = dims_of(k.dimensions(), x.dimensions(), &d); e.failure()) return e;
  one_thread();
  (relu ? forward<true> : forward<false>)(d, k, x, mask, h0, c0, hs, cs, acts, zs, tc);
  return ffi::Error::Success();
}

ffi::Error LstmBackwardImpl(ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mask,
                            ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> acts,
                            ffi::Buffer<ffi::F32> zs, ffi::Buffer<ffi::F32> tc, ffi::Buffer<ffi::F32> gh,
                            ffi::Buffer<ffi::F32> gc, ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dh0,
                            ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> da,
                            int32_t relu) {
  Dims d;
  if (auto e = dims_of(k.dimensions(), x.dimensions(), &d); e.failure()) return e;
  one_thread();
  (relu ? backward<true> : backward<false>)(d, k, mask, c0, cs, acts, zs, tc, gh, gc, dk, dh0, dc0, da);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PopdynLstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // acts
                                  .Ret<ffi::Buffer<ffi::F32>>()  // zs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // tc
                                  .Attr<int32_t>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PopdynLstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (its shape gives B, T, M)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // acts
                                  .Arg<ffi::Buffer<ffi::F32>>()  // zs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // tc
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gc
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dc0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // da
                                  .Attr<int32_t>("relu"));
