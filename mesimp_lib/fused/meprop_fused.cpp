// Fused meProp backward kernels and a lazy Adam step (CPU). Built on first use by
// mesimp_lib/fused/__init__.py with torch.utils.cpp_extension; the pure-PyTorch path in meprop.py is
// the reference and the fallback.
//
// topk_backward: the whole per-example backward of one layer in one native pass
//     select   idx[b] = the k largest |g[b, :]| (or the caller's indices), kept = g[b, idx] * scale
//     dx[b, :] = sum_t kept[b, t] * W[idx[b, t], :]      (B*k*in multiply-adds, not B*out*in)
//     dW rows  = sum over the examples that selected row j of kept * x[b, :]
//              either accumulated into the caller's dense [out, in] buffer, or written compactly as
//              (rows (U,), values (U, in)) for the union U of the selected rows (no dense buffer at all)
//     db       = g.sum(0) (or the kept entries only, sparsify_bias)
//     counts  += 1 per selected entry (non-zero ones unless count_zero_hits), the meSimp/stats record
// Entries whose kept value is exactly 0 add nothing and are skipped.
//
// per_example_backward: the same products for caller-given indices/values into a dense buffer (kept
// for compatibility).
//
// unified_backward: the unified top-k backward as one native call (no Python between the steps):
//     idx = topk(sum_b |g[b, :]|, k); gk = g[:, idx]; dx = gk @ W[idx]; rows = gk^T @ x
//
// meprop_linear_native (meprop_native.cpp): the whole layer as a C++ autograd function around topk_backward.
//
// adam_step: one Adam step for a list of parameters, each either dense (rows undefined) or lazy
// (only the listed rows of the parameter and of its two moments change; values (R, in)).
#include <torch/extension.h>

#include <algorithm>
#include <functional>
#include <type_traits>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace {

template <typename T>
inline void axpy(int64_t n, T a, const T* __restrict x, T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename T>
inline void scal_copy(int64_t n, T a, const T* __restrict x, T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}

template <typename T>
void per_example_impl(const torch::Tensor& vals, const torch::Tensor& idx, const torch::Tensor& x,
                      const torch::Tensor& W, torch::Tensor* dx, torch::Tensor* dW, torch::Tensor& touched) {
  const int64_t N = vals.size(0), k = vals.size(1), in = x.size(1);
  const T* vp = vals.data_ptr<T>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const T* xp = x.data_ptr<T>();
  const T* wp = W.data_ptr<T>();
  T* dxp = dx ? dx->data_ptr<T>() : nullptr;
  T* dwp = dW ? dW->data_ptr<T>() : nullptr;
  bool* tp = touched.data_ptr<bool>();
  for (int64_t b = 0; b < N; ++b) {
    for (int64_t t = 0; t < k; ++t) {
      const T v = vp[b * k + t];
      if (v == T(0)) continue;
      const int64_t j = ip[b * k + t];
      if (dxp) axpy<T>(in, v, wp + j * in, dxp + b * in);
      if (dwp) {
        axpy<T>(in, v, xp + b * in, dwp + j * in);
        tp[j] = true;
      }
    }
  }
}

// k largest |g| of one row (any order), ties broken towards the lower index. For non-negative floats the
// unsigned bit pattern orders like the value, so the k-th largest |g| is the largest key thr with
// #{key >= thr} >= k: a binary search over the key range whose every probe is a branch-free, vectorised
// count over the row (about 31 short passes for float). Then one scan keeps every key above thr and, in
// index order, as many keys equal to thr as are still needed. (A heap or nth_element mispredicts a branch
// on about every other element.)
template <typename T>
struct KeyOf;
template <>
struct KeyOf<float> { using type = uint32_t; };
template <>
struct KeyOf<double> { using type = uint64_t; };

template <typename K>
inline int64_t count_ge(const K* __restrict keys, int64_t n, K thr) {
  using C = typename std::conditional<sizeof(K) == 4, int32_t, int64_t>::type;  // no widening in the loop
  C c = 0;
  for (int64_t j = 0; j < n; ++j) c += C(keys[j] >= thr);
  return int64_t(c);
}

template <typename T>
void select_row(const T* g, int64_t out, int64_t k, std::vector<typename KeyOf<T>::type>& work, int64_t* dst) {
  using K = typename KeyOf<T>::type;
  if (k >= out) {
    for (int64_t j = 0; j < out; ++j) dst[j] = j;
    return;
  }
  work.resize(out);
  K* keys = work.data();
  K hi = 0;
  for (int64_t j = 0; j < out; ++j) {
    const T a = std::abs(g[j]);
    K key;
    std::memcpy(&key, &a, sizeof(T));
    keys[j] = key;
    hi = key > hi ? key : hi;
  }
  K lo = 0;  // invariant: #{key >= lo} >= k
  while (lo < hi) {
    const K mid = lo + (hi - lo) / 2 + 1;
    if (count_ge<K>(keys, out, mid) >= k) lo = mid; else hi = mid - 1;
  }
  int64_t above = 0;
  for (int64_t j = 0; j < out; ++j) above += keys[j] > lo;
  int64_t equal_left = k - above, t = 0;
  for (int64_t j = 0; j < out && t < k; ++j) {
    if (keys[j] > lo || (keys[j] == lo && equal_left-- > 0)) dst[t++] = j;
  }
}

template <typename T>
void topk_impl(const torch::Tensor& g, const torch::Tensor& x, const torch::Tensor& W, int64_t k, bool select,
               torch::Tensor& idx, torch::Tensor& kept, double scale, torch::Tensor* dx, torch::Tensor* db,
               bool sparsify_bias, torch::Tensor* dense_dw, bool compact, torch::Tensor& rows_out,
               torch::Tensor& vals_out, torch::Tensor* counts, bool count_zero_hits) {
  const int64_t N = g.size(0), out = g.size(1), in = x.size(1);
  const T* gp = g.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* wp = W.data_ptr<T>();
  int64_t* ip = idx.data_ptr<int64_t>();
  T* kp = kept.data_ptr<T>();
  // 1. selection and the kept values
  std::vector<typename KeyOf<T>::type> work;
  for (int64_t b = 0; b < N; ++b) {
    if (select) select_row<T>(gp + b * out, out, k, work, ip + b * k);
    for (int64_t t = 0; t < k; ++t) kp[b * k + t] = gp[b * out + ip[b * k + t]] * T(scale);
  }
  // 2. the record
  if (counts) {
    int64_t* cp = counts->data_ptr<int64_t>();
    for (int64_t e = 0; e < N * k; ++e)
      if (count_zero_hits || kp[e] != T(0)) ++cp[ip[e]];
  }
  // 3. bias gradient
  if (db) {
    T* dbp = db->data_ptr<T>();
    std::fill(dbp, dbp + out, T(0));
    if (sparsify_bias) {
      for (int64_t e = 0; e < N * k; ++e) dbp[ip[e]] += kp[e];
    } else {
      for (int64_t b = 0; b < N; ++b)
        for (int64_t j = 0; j < out; ++j) dbp[j] += gp[b * out + j];
    }
  }
  // 4. input gradient: k axpy's per example
  if (dx) {
    T* dxp = dx->data_ptr<T>();
    for (int64_t b = 0; b < N; ++b) {
      T* d = dxp + b * in;
      std::fill(d, d + in, T(0));
      for (int64_t t = 0; t < k; ++t) {
        const T v = kp[b * k + t];
        if (v != T(0)) axpy<T>(in, v, wp + ip[b * k + t] * in, d);
      }
    }
  }
  // 5. the rows of dW: the sorted union of the selected rows (a row selected only with value 0 gets a 0 row)
  std::vector<int64_t> pos(out, -1);
  for (int64_t e = 0; e < N * k; ++e) pos[ip[e]] = 0;  // every selected row, as the PyTorch path
  int64_t U = 0;
  for (int64_t j = 0; j < out; ++j)
    if (pos[j] == 0) pos[j] = U++;
  rows_out = torch::empty({U}, idx.options());
  int64_t* rp = rows_out.data_ptr<int64_t>();
  for (int64_t j = 0; j < out; ++j)
    if (pos[j] >= 0) rp[pos[j]] = j;
  if (dense_dw) {  // accumulate into the caller's buffer
    T* dwp = dense_dw->data_ptr<T>();
    for (int64_t b = 0; b < N; ++b)
      for (int64_t t = 0; t < k; ++t) {
        const T v = kp[b * k + t];
        if (v != T(0)) axpy<T>(in, v, xp + b * in, dwp + ip[b * k + t] * in);
      }
    return;
  }
  if (!compact) return;
  // compact: the first contribution to a row is written, the others added (no zero-fill)
  vals_out = torch::empty({U, in}, x.options());
  T* vp = vals_out.data_ptr<T>();
  std::vector<char> seen(U, 0);
  for (int64_t b = 0; b < N; ++b)
    for (int64_t t = 0; t < k; ++t) {
      const T v = kp[b * k + t];
      const int64_t u = pos[ip[b * k + t]];
      if (seen[u]) {
        if (v != T(0)) axpy<T>(in, v, xp + b * in, vp + u * in);
      } else {
        scal_copy<T>(in, v, xp + b * in, vp + u * in);
        seen[u] = 1;
      }
    }
}

// the same float operations, in the same order, as torch.optim.Adam's default (foreach) step
template <typename T>
inline void adam_row(int64_t n, const T* __restrict g, T* __restrict p, T* __restrict m, T* __restrict v, T b1,
                     T b2, T c1, T c2, T neg_step_size, T sqrt_bc2, T eps) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = m[i] + c1 * (gi - m[i]);  // lerp
    const T vi = v[i] * b2 + c2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] + neg_step_size * (mi / (std::sqrt(vi) / sqrt_bc2 + eps));
  }
}

}  // namespace

// vals, idx: (N, k); x: (N, in); W: (out, in); dW: (out, in) buffer to accumulate into (or empty).
// Returns {dx (N, in) or empty, touched (out,) bool}.
std::vector<torch::Tensor> per_example_backward(torch::Tensor vals, torch::Tensor idx, torch::Tensor x,
                                                torch::Tensor W, torch::Tensor dW, bool need_x, bool need_w) {
  TORCH_CHECK(vals.device().is_cpu(), "per_example_backward runs on the CPU");
  TORCH_CHECK(vals.is_contiguous() && idx.is_contiguous() && x.is_contiguous() && W.is_contiguous(),
              "per_example_backward needs contiguous tensors");
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "idx must be int64");
  TORCH_CHECK(!need_w || (dW.is_contiguous() && dW.sizes() == W.sizes()), "dW must be a contiguous [out, in] tensor");
  torch::Tensor dx = need_x ? torch::zeros({x.size(0), x.size(1)}, x.options()) : torch::Tensor();
  torch::Tensor touched = torch::zeros({W.size(0)}, torch::TensorOptions().dtype(torch::kBool));
  AT_DISPATCH_FLOATING_TYPES(vals.scalar_type(), "per_example_backward", [&] {
    per_example_impl<scalar_t>(vals, idx, x, W, need_x ? &dx : nullptr, need_w ? &dW : nullptr, touched);
  });
  return {dx, touched};
}

// g: (N, out); x: (N, in); W: (out, in); idx_in: (N, k) int64 to use given indices, or empty to select the
// top-k; dW: a dense (out, in) buffer to accumulate into, or empty; compact: return (rows, values) instead;
// counts: (out,) int64 to add the record to, or empty.
// Returns {dx or None, db or None, idx (N, k), kept (N, k), rows (U,) = sorted union of the selected rows,
// values (U, in) or None (compact only)}.
std::vector<torch::Tensor> topk_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                         torch::Tensor idx_in, double scale, bool need_x, bool need_b,
                                         bool sparsify_bias, torch::Tensor dW, bool compact, torch::Tensor counts,
                                         bool count_zero_hits) {
  TORCH_CHECK(g.device().is_cpu(), "topk_backward runs on the CPU");
  TORCH_CHECK(g.is_contiguous() && x.is_contiguous() && W.is_contiguous(), "topk_backward needs contiguous tensors");
  TORCH_CHECK(g.scalar_type() == x.scalar_type() && x.scalar_type() == W.scalar_type(), "dtypes must agree");
  const int64_t N = g.size(0), out = g.size(1);
  TORCH_CHECK(k >= 1 && k <= out, "k must be in [1, out]");
  const bool select = !idx_in.defined() || idx_in.numel() == 0;
  torch::Tensor idx = select ? torch::empty({N, k}, g.options().dtype(torch::kLong)) : idx_in.contiguous();
  torch::Tensor kept = torch::empty({N, k}, g.options());
  torch::Tensor dx = need_x ? torch::empty({N, x.size(1)}, x.options()) : torch::Tensor();
  torch::Tensor db = need_b ? torch::empty({out}, g.options()) : torch::Tensor();
  const bool dense = dW.defined() && dW.numel() > 0;
  TORCH_CHECK(!dense || (dW.is_contiguous() && dW.sizes() == W.sizes()), "dW must be a contiguous [out, in] tensor");
  const bool count = counts.defined() && counts.numel() > 0;
  TORCH_CHECK(!count || (counts.scalar_type() == torch::kLong && counts.numel() == out), "counts must be (out,) int64");
  torch::Tensor rows, vals;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "topk_backward", [&] {
    topk_impl<scalar_t>(g, x, W, k, select, idx, kept, scale, need_x ? &dx : nullptr, need_b ? &db : nullptr,
                        sparsify_bias, dense ? &dW : nullptr, compact, rows, vals, count ? &counts : nullptr,
                        count_zero_hits);
  });
  return {dx, db, idx, kept, rows, vals};
}

// Returns {dx (N, in) or empty, idx (k,), rows (k, in) or empty}: the caller writes rows into dW.
std::vector<torch::Tensor> unified_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                            bool need_x, bool need_w) {
  torch::Tensor idx = std::get<1>(g.abs().sum(0).topk(k, /*dim=*/-1, /*largest=*/true, /*sorted=*/false));
  torch::Tensor gk = g.index_select(1, idx);
  torch::Tensor dx = need_x ? gk.mm(W.index_select(0, idx)) : torch::Tensor();
  torch::Tensor rows = need_w ? gk.t().mm(x) : torch::Tensor();
  return {dx, idx, rows};
}

// One Adam step over a list of parameters. For parameter i: grads[i] is the dense gradient
// (rows[i] not 1-D, e.g. an empty (0, 0) tensor) or the values (R, in) of the rows rows[i] (R,) (only those rows of params[i], exp_avgs[i], exp_avg_sqs[i]
// change). steps[i] is the step count t after this step (for the bias corrections).
void adam_step(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads, std::vector<torch::Tensor> rows,
               std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs,
               std::vector<double> steps, double lr, double beta1, double beta2, double eps) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && rows.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n &&
                  steps.size() == n, "adam_step: lists of different lengths");
  for (size_t i = 0; i < n; ++i) {
    torch::Tensor& p = params[i];
    TORCH_CHECK(p.is_contiguous() && exp_avgs[i].is_contiguous() && exp_avg_sqs[i].is_contiguous(),
                "adam_step needs contiguous parameters and moments");
    torch::Tensor g = grads[i].contiguous();
    const double bc1 = 1.0 - std::pow(beta1, steps[i]), bc2 = 1.0 - std::pow(beta2, steps[i]);
    const bool lazy = rows[i].defined() && rows[i].dim() == 1;  // dense: any other shape, e.g. (0, 0)
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "adam_step", [&] {
      using T = scalar_t;
      T* pp = p.data_ptr<T>();
      T* mp = exp_avgs[i].data_ptr<T>();
      T* vp = exp_avg_sqs[i].data_ptr<T>();
      const T* gp = g.data_ptr<T>();
      const T neg_step_size = T(-lr / bc1), sqrt_bc2 = T(std::sqrt(bc2));
      const T c1 = T(1.0 - beta1), c2 = T(1.0 - beta2);  // rounded from double, as torch does
      if (!lazy) {
        TORCH_CHECK(g.numel() == p.numel(), "adam_step: dense gradient of the wrong size");
        adam_row<T>(p.numel(), gp, pp, mp, vp, T(beta1), T(beta2), c1, c2, neg_step_size, sqrt_bc2, T(eps));
        return;
      }
      const int64_t R = rows[i].numel();
      const int64_t width = p.numel() / std::max<int64_t>(1, p.size(0));
      TORCH_CHECK(g.numel() == R * width, "adam_step: row values must be (R, row size)");
      torch::Tensor r = rows[i].to(torch::kLong).contiguous();
      const int64_t* rp = r.data_ptr<int64_t>();
      for (int64_t t = 0; t < R; ++t) {
        const int64_t j = rp[t];
        TORCH_CHECK(j >= 0 && j < p.size(0), "adam_step: row index out of range");
        adam_row<T>(width, gp + t * width, pp + j * width, mp + j * width, vp + j * width, T(beta1), T(beta2),
                    c1, c2, neg_step_size, sqrt_bc2, T(eps));
      }
    });
  }
}

void init_native(pybind11::module& m);  // meprop_native.cpp: the layer as a C++ autograd function

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("per_example_backward", &per_example_backward, "fused per-example meProp backward (CPU)");
  m.def("topk_backward", &topk_backward, "per-example top-k selection + backward + record in one pass (CPU)");
  m.def("unified_backward", &unified_backward, "unified meProp backward in one native call");
  m.def("adam_step", &adam_step, "dense or row-lazy Adam step over a list of parameters (CPU)");
  init_native(m);
}
