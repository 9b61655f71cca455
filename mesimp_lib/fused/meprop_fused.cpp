// Fused meProp backward kernels (CPU). Built on first use by mesimp_lib/fused/__init__.py with
// torch.utils.cpp_extension; the pure-PyTorch path in meprop.py is the reference and the fallback.
//
// per_example_backward: for every example b and every kept entry (j, v) of its top-k set
//     dx[b, :] += v * W[j, :]        (k axpy's of length `in`: B*k*in multiply-adds, not B*out*in)
//     dW[j, :] += v * x[b, :]        (written straight into the caller's [out, in] gradient buffer)
// and marks the rows of dW it wrote. Entries whose value is exactly 0 are skipped (they add 0).
//
// unified_backward: the unified top-k backward as one native call (no Python between the steps):
//     idx = topk(sum_b |g[b, :]|, k); gk = g[:, idx]; dx = gk @ W[idx]; dW[idx] += gk^T @ x
#include <torch/extension.h>

#include <vector>

namespace {

template <typename T>
inline void axpy(int64_t n, T a, const T* __restrict x, T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
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

// Returns {dx (N, in) or empty, idx (k,), rows (k, in) or empty}: the caller writes rows into dW.
std::vector<torch::Tensor> unified_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                            bool need_x, bool need_w) {
  torch::Tensor idx = std::get<1>(g.abs().sum(0).topk(k, /*dim=*/-1, /*largest=*/true, /*sorted=*/false));
  torch::Tensor gk = g.index_select(1, idx);
  torch::Tensor dx = need_x ? gk.mm(W.index_select(0, idx)) : torch::Tensor();
  torch::Tensor rows = need_w ? gk.t().mm(x) : torch::Tensor();
  return {dx, idx, rows};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("per_example_backward", &per_example_backward, "fused per-example meProp backward (CPU)");
  m.def("unified_backward", &unified_backward, "unified meProp backward in one native call");
}
