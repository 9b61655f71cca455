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
//     counts  += 1 per selected non-zero entry, the meSimp/stats record; with count_zero_hits (per example) as
//              the authors' C# heap: a row with fewer than k non-zeros also counts the heap's zero fillers
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
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
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

// k largest |g| of one row, emitted in index order, ties broken towards the lower index. For non-negative
// floats the unsigned bit pattern orders like the value, so the k-th largest |g| is the largest key thr with
// #{key >= thr} >= k. Steps: (1) the keys and their maximum; (2) from the maximum's binade downwards, the
// first binade floor E with #{key >= E} >= k (a few branch-free counting passes; after 8 binades E = 0);
// (3) the keys >= E (typically a few dozen) are compacted and thr is found by a binary search over their
// bits, each probe a short branch-free count; (4) one pass emits every key > thr and, in index order, as
// many keys == thr as are still needed. Same result as a full sort; no data-dependent branch per element.
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
struct SelectWork {
  using K = typename KeyOf<T>::type;
  std::vector<K> keys, cand;
  std::vector<int32_t> pick;
};

// cand[0:m] = the keys >= E in index order (cand has room for n); returns m
template <typename K>
inline int64_t compact_ge(const K* __restrict keys, int64_t n, K E, K* __restrict cand) {
  int64_t m = 0, j = 0;
#if defined(__AVX512F__)
  if constexpr (sizeof(K) == 4) {
    const __m512i e = _mm512_set1_epi32(int32_t(E));
    for (; j + 16 <= n; j += 16) {
      const __m512i v = _mm512_loadu_si512(keys + j);
      const __mmask16 mk = _mm512_cmpge_epu32_mask(v, e);
      _mm512_mask_compressstoreu_epi32(cand + m, mk, v);
      m += __builtin_popcount(mk);
    }
  }
#endif
  for (; j < n; ++j) {
    cand[m] = keys[j];
    m += keys[j] >= E;
  }
  return m;
}

// dst[0:k] = the indices of the keys >= thr, in index order (exactly k of them)
template <typename K>
inline void emit_ge(const K* __restrict keys, int64_t n, K thr, int64_t k, std::vector<int32_t>& pick, int64_t* dst) {
  int64_t t = 0, j = 0;
#if defined(__AVX512F__)
  if constexpr (sizeof(K) == 4) {
    pick.resize(k + 16);
    int32_t* pp = pick.data();
    const __m512i th = _mm512_set1_epi32(int32_t(thr));
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16);
    for (; j + 16 <= n && t < k; j += 16) {
      const __mmask16 mk = _mm512_cmpge_epu32_mask(_mm512_loadu_si512(keys + j), th);
      _mm512_mask_compressstoreu_epi32(pp + t, mk, idx);
      t += __builtin_popcount(mk);
      idx = _mm512_add_epi32(idx, sixteen);
    }
    for (int64_t i = 0; i < t; ++i) dst[i] = pp[i];
  }
#endif
  for (; j < n && t < k; ++j) {
    dst[t] = j;
    t += keys[j] >= thr;
  }
}

template <typename T>
void select_row(const T* g, int64_t out, int64_t k, SelectWork<T>& w, int64_t* dst) {
  using K = typename KeyOf<T>::type;
  if (k >= out) {
    for (int64_t j = 0; j < out; ++j) dst[j] = j;
    return;
  }
  w.keys.resize(out);
  K* keys = w.keys.data();
  K hi = 0;
  for (int64_t j = 0; j < out; ++j) {
    const T a = std::abs(g[j]);
    K key;
    std::memcpy(&key, &a, sizeof(T));
    keys[j] = key;
    hi = key > hi ? key : hi;
  }
  constexpr int MB = std::numeric_limits<T>::digits - 1;  // mantissa bits: 23 (float), 52 (double)
  K E = (hi >> MB) << MB;
  int64_t c = count_ge<K>(keys, out, E);
  for (int step = 0; c < k && step < 8 && E > 0; ++step) {
    E -= K(1) << MB;
    c = count_ge<K>(keys, out, E);
  }
  if (c < k) {
    E = 0;
    c = out;
  }
  w.cand.resize(out);
  K* cand = w.cand.data();
  const int64_t m = compact_ge<K>(keys, out, E, cand);
  K lo = E;  // invariant: #{key >= lo} >= k
  while (lo < hi) {
    const K mid = lo + (hi - lo) / 2 + 1;
    if (count_ge<K>(cand, m, mid) >= k) lo = mid; else hi = mid - 1;
  }
  const int64_t ge = count_ge<K>(cand, m, lo);
  if (ge == k) {  // no excess ties at thr (the usual case): every key >= thr
    emit_ge<K>(keys, out, lo, k, w.pick, dst);
    return;
  }
  int64_t t = 0;
  int64_t gt = 0;
  for (int64_t j = 0; j < m; ++j) gt += cand[j] > lo;
  int64_t equal_left = k - gt;
  for (int64_t j = 0; j < out && t < k; ++j) {
    if (keys[j] > lo || (keys[j] == lo && equal_left-- > 0)) dst[t++] = j;
  }
}

// dst[0:n] = sum over c of coef[c] * rows[c][0:n], added in c order onto init (0, or coef[0] * rows[0] when
// first_is_init): the same float operations as a sequence of axpy's, but every dst element written once, with
// the partial sums in registers (chunks of CH elements).
template <typename T, int CH>
inline int64_t comb_chunks(int64_t i, int64_t n, int64_t cnt, const T* __restrict coef, const T* const* rows,
                           bool first_is_init, T* __restrict dst) {
  for (; i + CH <= n; i += CH) {
    T acc[CH];
    int64_t c0 = 0;
    if (first_is_init) {
      for (int j = 0; j < CH; ++j) acc[j] = coef[0] * rows[0][i + j];
      c0 = 1;
    } else {
      for (int j = 0; j < CH; ++j) acc[j] = T(0);
    }
    for (int64_t c = c0; c < cnt; ++c) {
      const T a = coef[c];
      const T* __restrict r = rows[c] + i;
      for (int j = 0; j < CH; ++j) acc[j] = std::fma(a, r[j], acc[j]);  // as the contracted axpy
    }
    for (int j = 0; j < CH; ++j) dst[i + j] = acc[j];
  }
  return i;
}

#if defined(__AVX512F__)
// float32 versions of the chunk loops with explicit 512-bit registers (V of them: 16 * V floats per chunk);
// _mm512_fmadd_ps rounds once, as std::fma, so the results equal the generic loops bit for bit
template <int V>
inline int64_t comb_chunks_avx(int64_t i, int64_t n, int64_t cnt, const float* __restrict coef,
                               const float* const* rows, bool first_is_init, float* __restrict dst) {
  constexpr int CH = 16 * V;
  for (; i + CH <= n; i += CH) {
    __m512 acc[V];
    int64_t c0 = 0;
    if (first_is_init) {
      const __m512 a = _mm512_set1_ps(coef[0]);
      for (int v = 0; v < V; ++v) acc[v] = _mm512_mul_ps(a, _mm512_loadu_ps(rows[0] + i + 16 * v));
      c0 = 1;
    } else {
      for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    }
    for (int64_t c = c0; c < cnt; ++c) {
      const __m512 a = _mm512_set1_ps(coef[c]);
      const float* r = rows[c] + i;
      for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(a, _mm512_loadu_ps(r + 16 * v), acc[v]);
    }
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(dst + i + 16 * v, acc[v]);
  }
  return i;
}

// RB output rows at once (RB * V accumulators): each source chunk loaded once per RB rows
template <int V, int RB>
inline int64_t multi_chunks_avx(int64_t i, int64_t n, int64_t R, int64_t C, const float* __restrict coef,
                                const float* const* src, float* __restrict dst) {
  constexpr int CH = 16 * V;
  // the C source chunks are packed contiguously first: rows a multiple of 4 KiB apart (any power-of-two
  // width) would all fall into the same L1 sets and evict each other
  std::vector<float> packed(C * CH);
  const float* pk = packed.data();
  for (; i + CH <= n; i += CH) {
    for (int64_t c = 0; c < C; ++c)
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(packed.data() + c * CH + 16 * v, _mm512_loadu_ps(src[c] + i + 16 * v));
    int64_t r = 0;
    for (; r + RB <= R; r += RB) {
      __m512 acc[RB][V];
      for (int q = 0; q < RB; ++q)
        for (int v = 0; v < V; ++v) acc[q][v] = _mm512_setzero_ps();
      for (int64_t c = 0; c < C; ++c) {
        const float* sp = pk + c * CH;
        __m512 sv[V];
        for (int v = 0; v < V; ++v) sv[v] = _mm512_loadu_ps(sp + 16 * v);
        for (int q = 0; q < RB; ++q) {
          const __m512 a = _mm512_set1_ps(coef[(r + q) * C + c]);
          for (int v = 0; v < V; ++v) acc[q][v] = _mm512_fmadd_ps(a, sv[v], acc[q][v]);
        }
      }
      for (int q = 0; q < RB; ++q)
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(dst + (r + q) * n + i + 16 * v, acc[q][v]);
    }
    for (; r < R; ++r) {
      __m512 acc[V];
      for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
      for (int64_t c = 0; c < C; ++c) {
        const __m512 a = _mm512_set1_ps(coef[r * C + c]);
        const float* sp = pk + c * CH;
        for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(a, _mm512_loadu_ps(sp + 16 * v), acc[v]);
      }
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(dst + r * n + i + 16 * v, acc[v]);
    }
  }
  return i;
}
#endif

template <typename T>
inline void combine_rows(int64_t n, int64_t cnt, const T* coef, const T* const* rows, bool first_is_init, T* dst) {
  constexpr int W = 64 / int(sizeof(T));  // one 512-bit register
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    i = comb_chunks_avx<4>(i, n, cnt, coef, rows, first_is_init, dst);
    i = comb_chunks_avx<1>(i, n, cnt, coef, rows, first_is_init, dst);
  }
#endif
  i = comb_chunks<T, 4 * W>(i, n, cnt, coef, rows, first_is_init, dst);
  i = comb_chunks<T, W>(i, n, cnt, coef, rows, first_is_init, dst);
  comb_chunks<T, 1>(i, n, cnt, coef, rows, first_is_init, dst);
}

// dst[j] += sum_b g[b, j] (added in b order; dst and g do not overlap, so the loop vectorises)
template <typename T>
inline void column_sums(const T* __restrict g, int64_t N, int64_t out, T* __restrict dst) {
  for (int64_t b = 0; b < N; ++b) {
    const T* __restrict gr = g + b * out;
    for (int64_t j = 0; j < out; ++j) dst[j] += gr[j];
  }
}

// count_zero_hits, per-example top-k: the authors' C# heap (TopNHeap.GetAbsTop) keeps, in a row with fewer than
// k non-zeros, every non-zero and the zeros of positions < k left after the first m in the preorder of the
// heap's tree (children 2i+1, 2i+2), m = the non-zeros at positions >= k (meprop.heap_fillers derives it).
// Adds that row's hits to cp and returns true; returns false (nothing added) when the row has >= k non-zeros.
template <typename T>
bool heap_filler_hits(const T* row, int64_t out, int64_t k, int64_t* cp) {
  int64_t nnz = 0, m = 0;
  for (int64_t j = 0; j < out; ++j) nnz += row[j] != T(0);
  if (nnz >= k) return false;
  for (int64_t j = k; j < out; ++j) m += row[j] != T(0);
  for (int64_t j = 0; j < out; ++j)
    if (row[j] != T(0)) ++cp[j];
  static thread_local std::vector<int64_t> stack;
  stack.assign(1, 0);
  int64_t skipped = 0;
  while (!stack.empty()) {
    const int64_t i = stack.back();
    stack.pop_back();
    if (i >= k) continue;
    if (row[i] == T(0)) {
      if (skipped < m) ++skipped;
      else ++cp[i];
    }
    stack.push_back(2 * i + 2);
    stack.push_back(2 * i + 1);
  }
  return true;
}

template <typename T>
void topk_impl(const torch::Tensor& g, const torch::Tensor& x, const torch::Tensor& W, int64_t k, bool select,
               torch::Tensor& idx, torch::Tensor& kept, double scale, torch::Tensor* dx, torch::Tensor* db,
               bool sparsify_bias, torch::Tensor* dense_dw, bool compact, torch::Tensor& rows_out,
               torch::Tensor& vals_out, torch::Tensor* counts, bool count_zero_hits,
               const std::function<void(int64_t, const T*)>* apply = nullptr) {
  const int64_t N = g.size(0), out = g.size(1), in = x.size(1);
  const T* gp = g.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* wp = W.data_ptr<T>();
  int64_t* ip = idx.data_ptr<int64_t>();
  T* kp = kept.data_ptr<T>();
  // 1. selection and the kept values
  // scratch reused across calls (no allocations per call), one set per thread: topk_impl must not be re-entered
  // on a thread (apply must not call it)
  static thread_local SelectWork<T> work;
  for (int64_t b = 0; b < N; ++b) {
    if (select) select_row<T>(gp + b * out, out, k, work, ip + b * k);
    for (int64_t t = 0; t < k; ++t) kp[b * k + t] = gp[b * out + ip[b * k + t]] * T(scale);
  }
  // 2. the record
  if (counts) {
    int64_t* cp = counts->data_ptr<int64_t>();
    for (int64_t b = 0; b < N; ++b) {
      if (count_zero_hits && select && heap_filler_hits<T>(gp + b * out, out, k, cp)) continue;
      for (int64_t t = 0; t < k; ++t)
        if (count_zero_hits || kp[b * k + t] != T(0)) ++cp[ip[b * k + t]];
    }
  }
  // 3. bias gradient
  if (db) {
    T* dbp = db->data_ptr<T>();
    std::fill(dbp, dbp + out, T(0));
    if (sparsify_bias) {
      for (int64_t e = 0; e < N * k; ++e) dbp[ip[e]] += kp[e];
    } else {
      column_sums<T>(gp, N, out, dbp);
    }
  }
  // 4. input gradient: dx[b] = sum of the k kept entries times their rows of W (zeros skipped), each dx
  //    element written once
  if (dx) {
    T* dxp = dx->data_ptr<T>();
    static thread_local std::vector<const T*> rws;
    static thread_local std::vector<T> cf;
    rws.resize(k);
    cf.resize(k);
    for (int64_t b = 0; b < N; ++b) {
      int64_t cnt = 0;
      for (int64_t t = 0; t < k; ++t) {
        const T v = kp[b * k + t];
        rws[cnt] = wp + ip[b * k + t] * in;
        cf[cnt] = v;
        cnt += v != T(0);
      }
      combine_rows<T>(in, cnt, cf.data(), rws.data(), false, dxp + b * in);
    }
  }
  // 5. the rows of dW: the sorted union of the selected rows (a row selected only with value 0 gets a 0 row)
  static thread_local std::vector<int64_t> pos;
  pos.assign(out, -1);
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
  // compact: row u = the first contribution to it (even a 0), plus the non-zero later ones, in example order;
  // each row written once. With apply: each row is formed in a small buffer and handed to apply(row index,
  // values) at once (the optimizer-in-backward path), no (U, in) tensor.
  static thread_local std::vector<T> rowbuf;
  T* vp = nullptr;
  if (apply) {
    rowbuf.resize(in);
  } else {
    vals_out = torch::empty({U, in}, x.options());
    vp = vals_out.data_ptr<T>();
  }
  static thread_local std::vector<int64_t> start, cnt;
  start.assign(U + 1, 0);
  cnt.assign(U, 0);
  for (int64_t e = 0; e < N * k; ++e) ++start[pos[ip[e]] + 1];
  for (int64_t u = 0; u < U; ++u) start[u + 1] += start[u];
  static thread_local std::vector<const T*> rws;
  static thread_local std::vector<T> cf;
  rws.resize(N * k);
  cf.resize(N * k);
  for (int64_t b = 0; b < N; ++b)
    for (int64_t t = 0; t < k; ++t) {
      const T v = kp[b * k + t];
      const int64_t u = pos[ip[b * k + t]];
      if (cnt[u] == 0 || v != T(0)) {
        const int64_t q = start[u] + cnt[u]++;
        rws[q] = xp + b * in;
        cf[q] = v;
      }
    }
  for (int64_t u = 0; u < U; ++u) {
    if (apply) {
      combine_rows<T>(in, cnt[u], cf.data() + start[u], rws.data() + start[u], true, rowbuf.data());
      (*apply)(rp[u], rowbuf.data());
    } else {
      combine_rows<T>(in, cnt[u], cf.data() + start[u], rws.data() + start[u], true, vp + u * in);
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
// caller-given indices (random mode): (N, k) int64, each in [0, out)
inline void check_given(const torch::Tensor& idx, int64_t N, int64_t k, int64_t out) {
  TORCH_CHECK(idx.scalar_type() == torch::kLong && idx.dim() == 2 && idx.size(0) == N && idx.size(1) == k,
              "given indices must be (N, k) int64");
  if (idx.numel()) {
    TORCH_CHECK(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < out, "given indices out of range");
  }
}

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
  if (!select) check_given(idx_in, N, k, out);
  TORCH_CHECK(x.dim() == 2 && x.size(0) == N && W.dim() == 2 && W.size(0) == out && W.size(1) == x.size(1),
              "topk_backward: g (N, out), x (N, in), W (out, in)");
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

// topk_backward with LazyAdam's update of W applied row by row inside it (the optimizer-in-backward path of
// meprop_mlp_native): dx is formed first (from W before the update), then every row of the union gets its
// gradient in a small buffer and the Adam update of adam_step at step count `step`, W's rows and their
// moments in place. Returns {dx or None, db or None, idx, kept, rows}.
std::vector<torch::Tensor> topk_backward_adam(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                              torch::Tensor idx_in, double scale, bool need_x, bool need_b,
                                              bool sparsify_bias, torch::Tensor counts, bool count_zero_hits,
                                              torch::Tensor m, torch::Tensor v, double step, double lr, double beta1,
                                              double beta2, double eps) {
  TORCH_CHECK(g.device().is_cpu() && g.is_contiguous() && x.is_contiguous() && W.is_contiguous() &&
                  m.is_contiguous() && v.is_contiguous() && m.sizes() == W.sizes() && v.sizes() == W.sizes(),
              "topk_backward_adam: contiguous CPU tensors, moments shaped like W");
  const int64_t N = g.size(0), out = g.size(1), in = x.size(1);
  TORCH_CHECK(k >= 1 && k <= out, "k must be in [1, out]");
  const bool select = !idx_in.defined() || idx_in.numel() == 0;
  if (!select) check_given(idx_in, N, k, out);
  TORCH_CHECK(x.dim() == 2 && x.size(0) == N && W.size(0) == out && W.size(1) == in && m.scalar_type() == W.scalar_type() &&
                  v.scalar_type() == W.scalar_type(), "topk_backward_adam: g (N, out), x (N, in), W, m, v (out, in)");
  torch::Tensor idx = select ? torch::empty({N, k}, g.options().dtype(torch::kLong)) : idx_in.contiguous();
  torch::Tensor kept = torch::empty({N, k}, g.options());
  torch::Tensor dx = need_x ? torch::empty({N, in}, x.options()) : torch::Tensor();
  torch::Tensor db = need_b ? torch::empty({out}, g.options()) : torch::Tensor();
  const bool count = counts.defined() && counts.numel() > 0;
  torch::Tensor rows, vals;
  const double bc1 = 1.0 - std::pow(beta1, step), bc2 = 1.0 - std::pow(beta2, step);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "topk_backward_adam", [&] {
    using T = scalar_t;
    T* pp = W.data_ptr<T>();
    T* mp = m.data_ptr<T>();
    T* vp = v.data_ptr<T>();
    const T neg_step_size = T(-lr / bc1), sqrt_bc2 = T(std::sqrt(bc2));
    const T c1 = T(1.0 - beta1), c2 = T(1.0 - beta2);
    const std::function<void(int64_t, const T*)> apply = [&](int64_t j, const T* grow) {
      adam_row<T>(in, grow, pp + j * in, mp + j * in, vp + j * in, T(beta1), T(beta2), c1, c2, neg_step_size,
                  sqrt_bc2, T(eps));
    };
    topk_impl<T>(g, x, W, k, select, idx, kept, scale, need_x ? &dx : nullptr, need_b ? &db : nullptr, sparsify_bias,
                 nullptr, true, rows, vals, count ? &counts : nullptr, count_zero_hits, &apply);
  });
  return {dx, db, idx, kept, rows};
}

// dst[r, 0:n] = sum over c of coef[r * C + c] * src[c][0:n] for r < R (row r of dst at dst + r * n), sums in
// c order from 0. Chunk by chunk (CH elements) so that the C source chunks stay in L1 while all R outputs
// are formed in registers: every source row is read once from memory, every output element written once.
template <typename T, int CH>
inline int64_t multi_chunks(int64_t i, int64_t n, int64_t R, int64_t C, const T* __restrict coef,
                            const T* const* src, T* __restrict dst) {
  for (; i + CH <= n; i += CH) {
    for (int64_t r = 0; r < R; ++r) {
      T acc[CH];
      for (int j = 0; j < CH; ++j) acc[j] = T(0);
      const T* cr = coef + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const T a = cr[c];
        const T* __restrict s = src[c] + i;
        for (int j = 0; j < CH; ++j) acc[j] = std::fma(a, s[j], acc[j]);
      }
      T* d = dst + r * n + i;
      for (int j = 0; j < CH; ++j) d[j] = acc[j];
    }
  }
  return i;
}

template <typename T>
void combine_multi(int64_t n, int64_t R, int64_t C, const T* coef, const T* const* src, T* dst) {
  constexpr int W = 64 / int(sizeof(T));
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    i = multi_chunks_avx<4, 4>(i, n, R, C, coef, src, dst);
    i = multi_chunks_avx<1, 4>(i, n, R, C, coef, src, dst);
  }
#endif
  i = multi_chunks<T, 4 * W>(i, n, R, C, coef, src, dst);
  i = multi_chunks<T, W>(i, n, R, C, coef, src, dst);
  multi_chunks<T, 1>(i, n, R, C, coef, src, dst);
}

// The unified top-k backward as one native call:
//     idx  = the k columns with the largest sum_b |g[b, :]| (summed in b order; the top-k of them by
//            select_row: index order, ties towards the lower index)
//     dx   = g[:, idx] @ W[idx]      (N*k*in multiply-adds, W's selected rows read in place, no gathered copy)
//     rows = g[:, idx]^T @ x         (k*N*in)
// Returns {dx (N, in) or empty, idx (k,) ascending, rows (k, in) or empty}: the caller writes rows into dW.
std::vector<torch::Tensor> unified_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                            bool need_x, bool need_w) {
  TORCH_CHECK(g.device().is_cpu() && g.dim() == 2, "unified_backward: g (N, out) on the CPU");
  g = g.contiguous();
  x = x.contiguous();
  W = W.contiguous();
  const int64_t N = g.size(0), out = g.size(1), in = x.size(1);
  TORCH_CHECK(k >= 1 && k <= out, "unified_backward: k must be in [1, out]");
  TORCH_CHECK(x.dim() == 2 && x.size(0) == N && W.dim() == 2 && W.size(0) == out && W.size(1) == in &&
                  x.scalar_type() == g.scalar_type() && W.scalar_type() == g.scalar_type(),
              "unified_backward: g (N, out), x (N, in), W (out, in) of one dtype");
  torch::Tensor idx = torch::empty({k}, g.options().dtype(torch::kLong));
  torch::Tensor dx = need_x ? torch::empty({N, in}, x.options()) : torch::Tensor();
  torch::Tensor rows = need_w ? torch::empty({k, in}, x.options()) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "unified_backward", [&] {
    using T = scalar_t;
    SelectWork<T> work;
    int64_t* ip = idx.data_ptr<int64_t>();
    const T* gp = g.data_ptr<T>();
    std::vector<T> colsum(out, T(0));  // sum_b |g[b, j]|, added in b order
    for (int64_t b = 0; b < N; ++b) {
      const T* gr = gp + b * out;
      T* cs = colsum.data();
      for (int64_t j = 0; j < out; ++j) cs[j] += std::abs(gr[j]);
    }
    select_row<T>(colsum.data(), out, k, work, ip);
    std::vector<T> gk(N * k), gkt(k * N);  // g[:, idx] and its transpose
    for (int64_t b = 0; b < N; ++b)
      for (int64_t t = 0; t < k; ++t) gkt[t * N + b] = gk[b * k + t] = gp[b * out + ip[t]];
    if (need_x) {
      std::vector<const T*> src(k);
      for (int64_t t = 0; t < k; ++t) src[t] = W.data_ptr<T>() + ip[t] * in;
      combine_multi<T>(in, N, k, gk.data(), src.data(), dx.data_ptr<T>());
    }
    if (need_w) {
      std::vector<const T*> src(N);
      for (int64_t b = 0; b < N; ++b) src[b] = x.data_ptr<T>() + b * in;
      combine_multi<T>(in, k, N, gkt.data(), src.data(), rows.data_ptr<T>());
    }
  });
  return {dx, idx, rows};
}

// The dense backward of a narrow layer at a small batch (the output layer: out <= 64, N <= 64; the caller's
// rule) in native loops instead of three small BLAS calls, whose fixed costs dominate at these shapes:
// dx[b] = sum_c g[b, c] W[c] (c in order), dW[c] = sum_b g[b, c] x[b] (b in order), db[c] = sum_b g[b, c].
// Every element of dx and dW is written once, the sums formed in registers (combine_multi); db is summed in
// place. One thread. Returns {dx or empty, dW (out, in) or empty, db or empty}.
std::vector<torch::Tensor> narrow_dense_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, bool need_x,
                                                 bool need_w, bool need_b) {
  TORCH_CHECK(g.device().is_cpu() && x.device().is_cpu() && W.device().is_cpu() && g.dim() == 2 && x.dim() == 2 && W.dim() == 2 && g.size(0) == x.size(0) &&
                  W.size(0) == g.size(1) && W.size(1) == x.size(1) && g.scalar_type() == x.scalar_type() &&
                  W.scalar_type() == g.scalar_type(),
              "narrow_dense_backward: g (N, out), x (N, in), W (out, in) of one dtype on the CPU");
  g = g.contiguous();
  x = x.contiguous();
  W = W.contiguous();
  const int64_t N = g.size(0), out = g.size(1), in = x.size(1);
  torch::Tensor dx = need_x ? torch::empty({N, in}, x.options()) : torch::Tensor();
  torch::Tensor dW = need_w ? torch::empty({out, in}, x.options()) : torch::Tensor();
  torch::Tensor db = need_b ? torch::zeros({out}, g.options()) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "narrow_dense_backward", [&] {
    using T = scalar_t;
    const T* gp = g.data_ptr<T>();
    if (need_x) {
      std::vector<const T*> src(out);
      for (int64_t c = 0; c < out; ++c) src[c] = W.data_ptr<T>() + c * in;
      combine_multi<T>(in, N, out, gp, src.data(), dx.data_ptr<T>());
    }
    if (need_w) {
      std::vector<const T*> src(N);
      for (int64_t b = 0; b < N; ++b) src[b] = x.data_ptr<T>() + b * in;
      std::vector<T> gt(out * N);
      for (int64_t b = 0; b < N; ++b)
        for (int64_t c = 0; c < out; ++c) gt[c * N + b] = gp[b * out + c];
      combine_multi<T>(in, out, N, gt.data(), src.data(), dW.data_ptr<T>());
    }
    if (need_b) column_sums<T>(gp, N, out, db.data_ptr<T>());
  });
  return {dx, dW, db};
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

// One parameter's LazyAdam step: its float32 step tensor += 1, then adam_step's row-lazy update for a coalesced
// row-sparse gradient (only its rows of p and of the moments change) or the dense update for a dense one. Shared
// by lazy_adam_step and the optimizer-in-backward path of meprop_mlp_native.
void adam_param_step(torch::Tensor p, const torch::Tensor& g, torch::Tensor m, torch::Tensor v, torch::Tensor step,
                     double lr, double beta1, double beta2, double eps) {
  float* st = step.data_ptr<float>();
  *st += 1.0f;
  torch::Tensor rows, vals = g;
  if (g.is_sparse()) {
    rows = g._indices().select(0, 0);
    vals = g._values();
  }
  adam_step({p}, {vals}, {rows}, {m}, {v}, {double(*st)}, lr, beta1, beta2, eps);
}

// Whether a sparse gradient is row-sparse with strictly ascending row indices: exactly what coalesced means for
// it (the rule of lazy._coalesced, one comparison per row instead of a sort).
bool rows_ascending(const torch::Tensor& g) {
  if (g.sparse_dim() != 1) return false;
  const torch::Tensor r = g._indices().select(0, 0).contiguous();
  const int64_t* rp = r.data_ptr<int64_t>();
  for (int64_t t = 1; t < r.numel(); ++t)
    if (rp[t] <= rp[t - 1]) return false;
  return true;
}

// LazyAdam's whole step in one call: for every parameter with a gradient, step += 1 (its float32 step tensor,
// as torch.optim.Adam keeps it), then the row-lazy update of adam_step for a row-sparse gradient (ascending rows
// marked coalesced, any other coalesced here and p.grad replaced by the coalesced one, as the Python path does) or the dense
// update for a dense gradient. Returns false, having changed nothing, when a parameter is not a contiguous
// CPU float32/float64 tensor (the caller then takes the PyTorch path).
bool lazy_adam_step(std::vector<torch::Tensor> params, std::vector<torch::Tensor> exp_avgs,
                    std::vector<torch::Tensor> exp_avg_sqs, std::vector<torch::Tensor> steps, double lr, double beta1,
                    double beta2, double eps) {
  const size_t n = params.size();
  TORCH_CHECK(exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n,
              "lazy_adam_step: lists of different lengths");
  for (size_t i = 0; i < n; ++i) {
    const torch::Tensor& p = params[i];
    if (!p.device().is_cpu() || !(p.scalar_type() == torch::kFloat || p.scalar_type() == torch::kDouble) ||
        !p.is_contiguous())
      return false;
    TORCH_CHECK(steps[i].scalar_type() == torch::kFloat && steps[i].numel() == 1 && steps[i].is_contiguous(),
                "lazy_adam_step: step tensors must be float32 scalars");
    TORCH_CHECK(exp_avgs[i].sizes() == p.sizes() && exp_avg_sqs[i].sizes() == p.sizes() &&
                    exp_avgs[i].scalar_type() == p.scalar_type() && exp_avg_sqs[i].scalar_type() == p.scalar_type() &&
                    exp_avgs[i].is_contiguous() && exp_avg_sqs[i].is_contiguous(),
                "lazy_adam_step: the moments of parameter ", i, " do not match it (shape, dtype, contiguity)");
    const torch::Tensor& gi = p.grad();
    TORCH_CHECK(!gi.defined() || (gi.scalar_type() == p.scalar_type() && (gi.is_sparse() || gi.numel() == p.numel())),
                "lazy_adam_step: the gradient of parameter ", i, " does not match it");
  }
  for (size_t i = 0; i < n; ++i) {
    torch::Tensor p = params[i];
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.is_sparse() && !g.is_coalesced()) {
      if (rows_ascending(g)) {
        g._coalesced_(true);  // a meProp layer's sorted unique rows: autograd's accumulation dropped the flag
      } else {
        g = g.coalesce();
        p.mutable_grad() = g;
      }
    }
    adam_param_step(p, g, exp_avgs[i], exp_avg_sqs[i], steps[i], lr, beta1, beta2, eps);
  }
  return true;
}

void init_native(pybind11::module& m);  // meprop_native.cpp: the layer as a C++ autograd function

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("per_example_backward", &per_example_backward, "fused per-example meProp backward (CPU)");
  m.def("topk_backward", &topk_backward, "per-example top-k selection + backward + record in one pass (CPU)");
  m.def("unified_backward", &unified_backward, "unified meProp backward in one native call");
  m.def("narrow_dense_backward", &narrow_dense_backward, "dense backward of a narrow (output) layer in native loops");
  m.def("adam_step", &adam_step, "dense or row-lazy Adam step over a list of parameters (CPU)");
  m.def("lazy_adam_step", &lazy_adam_step, "LazyAdam's step in one call: step counts, gradients read from p.grad");
  init_native(m);
}
