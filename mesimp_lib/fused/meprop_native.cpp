// The meProp linear layer as a C++ autograd function (kernel="native" of MePropLinear): forward
// y = x W^T + b with at::addmm, backward = the fused per-example kernel topk_backward of meprop_fused.cpp,
// all inside the autograd engine (no Python between the loss and the optimizer).
//
// Backward, k > 0 (per_example; random draws its indices here exactly as select_random does):
//     one topk_backward pass: selection, kept values, the record (counts), db, dx (skipped when x needs no
//     grad), dW as the compact rows of the union of the selected rows.
//     The weight gradient goes back through autograd: weight_grad = 1 "sparse": a coalesced row-sparse
//     sparse_coo_tensor of those rows (what LazyAdam / LazySGD / SGD consume); 0 "dense": the rows written
//     into a zero (out, in) tensor.
// Backward, k == 0: the dense backward (g @ W, g^T x, g.sum(0)), as the PyTorch path does.
// Stats: counts (out,) int64 += the record; acc (7,) int64 += {calls, examples, rows touched (last, total),
// multiply-adds done, dense multiply-adds}, acc[6] = 1 (this path recorded the last step, with indices) or 2
// (dense, no indices); last is set_() to the selected indices. Empty tensors = not tracked.
#include <torch/extension.h>

#include <optional>

std::vector<torch::Tensor> topk_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                         torch::Tensor idx_in, double scale, bool need_x, bool need_b,
                                         bool sparsify_bias, torch::Tensor dW, bool compact, torch::Tensor counts,
                                         bool count_zero_hits);

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct NativeCfg {
  int64_t k;            // 0 = dense backward
  bool random;          // random indices instead of the top-k
  double scale;         // multiplies the kept entries (random + rescale: out / k)
  bool sparsify_bias;
  int64_t weight_grad;  // 0 dense, 1 sparse
  bool count_zero_hits;
  Tensor counts, acc, last;  // stats (empty = not tracked)
};

inline bool tracked(const Tensor& t) { return t.defined() && t.numel() > 0; }

struct MePropNativeFn : public torch::autograd::Function<MePropNativeFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& W, const std::optional<Tensor>& b,
                        const NativeCfg& cfg) {
    ctx->save_for_backward({x, W});
    auto& d = ctx->saved_data;
    d["k"] = cfg.k;
    d["random"] = cfg.random;
    d["scale"] = cfg.scale;
    d["sb"] = cfg.sparsify_bias;
    d["wg"] = cfg.weight_grad;
    d["czh"] = cfg.count_zero_hits;
    d["has_b"] = b.has_value() && b->defined();
    if (tracked(cfg.acc)) {
      d["counts"] = cfg.counts;
      d["acc"] = cfg.acc;
      d["last"] = cfg.last;
    }
    if (b.has_value() && b->defined()) return at::addmm(*b, x, W.t());
    return at::mm(x, W.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& W = saved[1];
    auto& d = ctx->saved_data;
    const bool has_b = d["has_b"].toBool();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = has_b && ctx->needs_input_grad(2);
    const int64_t k = d["k"].toInt(), wg = d["wg"].toInt();
    Tensor g = grad_outputs[0].contiguous();
    const int64_t n = g.size(0), out = g.size(1), in = x.size(1);
    Tensor gx, gw, gb, rows, vals, sel;
    int64_t touched, computed;
    if (k == 0) {  // dense
      if (need_x) gx = g.mm(W);
      if (need_w) vals = g.t().mm(x);
      if (need_b) gb = g.sum(0);
      touched = computed = out;
      if (need_w && wg == 1) rows = torch::arange(out, g.options().dtype(torch::kLong));
    } else {
      Tensor given;
      if (d["random"].toBool()) {  // as select_random: the default dtype, the global generator
        given = std::get<1>(at::rand(g.sizes(), at::TensorOptions().device(g.device())).topk(k, 1, true, false));
      } else {
        given = torch::empty({0, 0});
      }
      Tensor counts = d.count("counts") ? d["counts"].toTensor() : torch::empty({0, 0});
      auto r = topk_backward(g, x.contiguous(), W.contiguous(), k, given, d["scale"].toDouble(), need_x, need_b,
                             d["sb"].toBool(), torch::empty({0, 0}), need_w, counts, d["czh"].toBool());
      if (need_x) gx = r[0];
      if (need_b) gb = r[1];
      sel = r[2];
      rows = r[4];
      vals = r[5];
      touched = rows.numel();
      computed = k;
    }
    if (need_w) {
      if (wg == 1) {
        gw = at::_sparse_coo_tensor_unsafe(rows.unsqueeze(0), vals, W.sizes(), vals.options(), true);
      } else if (rows.defined() && k != 0) {
        gw = torch::zeros_like(W, at::MemoryFormat::Contiguous).index_copy_(0, rows, vals);
      } else {
        gw = vals;
      }
    }
    if (d.count("acc")) {
      int64_t* a = d["acc"].toTensor().data_ptr<int64_t>();
      const int64_t prods = int64_t(need_x) + int64_t(need_w);
      a[0] += 1;
      a[1] += n;
      a[2] = touched;
      a[3] += touched;
      a[4] += n * computed * in * prods;
      a[5] += n * out * in * prods;
      if (k == 0) {
        a[6] = 2;
      } else {
        a[6] = 1;
        d["last"].toTensor().set_(sel);
      }
    }
    return {gx, gw, gb, Tensor()};
  }
};

// x (N, in), W (out, in), b (out,) or None. acc/counts/last: the layer's stats tensors, or empty.
Tensor meprop_linear_native(const Tensor& x, const Tensor& W, const std::optional<Tensor>& b, int64_t k, bool random,
                            double scale, bool sparsify_bias, int64_t weight_grad, bool count_zero_hits,
                            const Tensor& counts, const Tensor& acc, const Tensor& last) {
  TORCH_CHECK(x.device().is_cpu() && W.device().is_cpu(), "meprop_linear_native runs on the CPU");
  TORCH_CHECK(x.dim() == 2 && W.dim() == 2 && x.size(1) == W.size(1), "meprop_linear_native: x (N, in), W (out, in)");
  TORCH_CHECK(k >= 0 && k <= W.size(0), "meprop_linear_native: k must be in [0, out]");
  TORCH_CHECK(weight_grad == 0 || weight_grad == 1, "meprop_linear_native: weight_grad 0 (dense) or 1 (sparse)");
  TORCH_CHECK(!tracked(acc) || (acc.scalar_type() == torch::kLong && acc.numel() >= 7 && acc.is_contiguous() &&
                                counts.scalar_type() == torch::kLong && counts.numel() == W.size(0)),
              "meprop_linear_native: acc must be (7,) int64 and counts (out,) int64");
  NativeCfg cfg{k, random, scale, sparsify_bias, weight_grad, count_zero_hits, counts, acc, last};
  return MePropNativeFn::apply(x, W, b, cfg);
}

}  // namespace

void init_native(pybind11::module& m) {
  m.def("meprop_linear_native", &meprop_linear_native,
        "meProp linear layer as a C++ autograd function: addmm forward, fused top-k backward (CPU)",
        pybind11::arg("x"), pybind11::arg("W"), pybind11::arg("b"), pybind11::arg("k"), pybind11::arg("random"),
        pybind11::arg("scale"), pybind11::arg("sparsify_bias"), pybind11::arg("weight_grad"),
        pybind11::arg("count_zero_hits"), pybind11::arg("counts"), pybind11::arg("acc"), pybind11::arg("last"));
}
