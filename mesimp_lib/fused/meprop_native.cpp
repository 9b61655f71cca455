// The meProp linear layer as a C++ autograd function (kernel="native" of MePropLinear): forward
// y = x W^T + b with at::addmm, backward = the fused per-example kernel topk_backward of meprop_fused.cpp,
// all inside the autograd engine (no Python between the loss and the optimizer).
//
// Backward, k > 0, mode 2 (unified): unified_backward (column sums, top-k, dx and the k dW rows in one call),
// db = g.sum(0) (or the kept columns only), the record counts the non-zero entries of the kept columns; the same
// operations as the fused Python path, so the same bits.
// Backward, k > 0, mode 0 / 1 (per_example; random draws its indices here exactly as select_random does):
//     one topk_backward pass: selection, kept values, the record (counts), db, dx (skipped when x needs no
//     grad), dW as the compact rows of the union of the selected rows.
//     The weight gradient goes back through autograd: weight_grad = 1 "sparse": a coalesced row-sparse
//     sparse_coo_tensor of those rows (what LazyAdam / LazySGD / SGD consume); 0 "dense": the rows written
//     into a zero (out, in) tensor.
// Backward, k == 0: the dense backward (g @ W, g^T x, g.sum(0)), as the PyTorch path does; for a narrow layer
// (out <= 64: the output layer) at a small batch (N <= 64) the same sums in native loops (narrow_dense_backward).
// Stats: counts (out,) int64 += the record; acc (7,) int64 += {calls, examples, rows touched (last, total),
// multiply-adds done, dense multiply-adds}, acc[6] = 1 (this path recorded the last step); last is set_() to the
// kept indices (a dense backward keeps every entry: (N, out), or (out,) unified). Empty tensors = not tracked.
#include <torch/extension.h>

#include <optional>

std::vector<torch::Tensor> topk_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                         torch::Tensor idx_in, double scale, bool need_x, bool need_b,
                                         bool sparsify_bias, torch::Tensor dW, bool compact, torch::Tensor counts,
                                         bool count_zero_hits);

void adam_param_step(torch::Tensor p, const torch::Tensor& g, torch::Tensor m, torch::Tensor v, torch::Tensor step,
                     double lr, double beta1, double beta2, double eps);

std::vector<torch::Tensor> topk_backward_adam(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                              torch::Tensor idx_in, double scale, bool need_x, bool need_b,
                                              bool sparsify_bias, torch::Tensor counts, bool count_zero_hits,
                                              torch::Tensor m, torch::Tensor v, double step, double lr, double beta1,
                                              double beta2, double eps);

std::vector<torch::Tensor> unified_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, int64_t k,
                                            bool need_x, bool need_w);

std::vector<torch::Tensor> narrow_dense_backward(torch::Tensor g, torch::Tensor x, torch::Tensor W, bool need_x,
                                                 bool need_w, bool need_b);

namespace {

// dense layers this narrow (out <= 64), at batches this small (N <= 64), take narrow_dense_backward; beyond,
// BLAS is faster (measured: equal at N = 50, BLAS 1.7x faster at N = 128); meprop.NARROW_DENSE is the same rule
constexpr int64_t kNarrow = 64;

using torch::Tensor;
using torch::autograd::AutogradContext;

// The dense backward {dx, dW, db} (undefined where not needed): narrow_dense_backward's native loops for a narrow
// layer at a small batch (out, N <= kNarrow, float32/float64), else g @ W, g^T x, g.sum(0) as the PyTorch path.
// The one place of this rule: the native functions and the fused Python path (MePropLinear, k None) call it.
std::vector<Tensor> dense_backward(const Tensor& g, const Tensor& x, const Tensor& W, bool need_x, bool need_w,
                                   bool need_b) {
  if (g.size(1) <= kNarrow && g.size(0) <= kNarrow &&
      (g.scalar_type() == torch::kFloat || g.scalar_type() == torch::kDouble)) {
    return narrow_dense_backward(g, x, W, need_x, need_w, need_b);
  }
  return {need_x ? g.mm(W) : Tensor(), need_w ? g.t().mm(x) : Tensor(), need_b ? g.sum(0) : Tensor()};
}
using torch::autograd::variable_list;

struct NativeCfg {
  int64_t k;            // 0 = dense backward
  int64_t mode;         // 0 per_example, 1 random (random indices instead of the top-k), 2 unified
  double scale;         // multiplies the kept entries (random + rescale: out / k)
  bool sparsify_bias;
  int64_t weight_grad;  // 0 dense, 1 sparse
  bool count_zero_hits;
  Tensor counts, acc, last;  // stats (empty = not tracked)
};

inline bool tracked(const Tensor& t) { return t.defined() && t.numel() > 0; }

// LazyAdam's update of a weight inside its backward (the optimizer-in-backward path): moments, the step count
// after this step, hyper-parameters
struct AdamW {
  Tensor m, v;
  double step, lr, b1, b2, eps;
};

// One layer's backward, shared by the layer function and the whole-MLP function. g: (N, out) output gradient;
// x, W the layer's saved input and weight. Returns {gx, gw, gb} (undefined where not needed) and updates the
// stats in cfg. With aw (k > 0): W's rows are updated in place by LazyAdam inside the kernel, gw undefined.
std::vector<Tensor> layer_backward(const Tensor& g_in, const Tensor& x, const Tensor& W, bool need_x, bool need_w,
                                   bool need_b, const NativeCfg& cfg, const AdamW* aw = nullptr) {
  const int64_t k = cfg.k, wg = cfg.weight_grad;
  const bool wants_w = need_w;  // for the record, also when the update consumes the gradient
  Tensor g = g_in.contiguous();
  const int64_t n = g.size(0), out = g.size(1), in = x.size(1);
  Tensor gx, gw, gb, rows, vals, sel;
  int64_t touched, computed;
  if (k == 0) {  // dense
    auto r = dense_backward(g, x, W, need_x, need_w, need_b);
    gx = r[0];
    vals = r[1];
    gb = r[2];
    touched = computed = out;
    if (need_w && wg == 1) rows = torch::arange(out, g.options().dtype(torch::kLong));
    sel = torch::arange(out, g.options().dtype(torch::kLong));  // every entry is kept (as all_indices)
    if (cfg.mode != 2) sel = sel.expand({n, out});
  } else if (cfg.mode == 2) {  // unified: one set of k columns for the whole batch
    auto r = unified_backward(g, x, W, k, need_x, need_w);
    if (need_x) gx = r[0];
    sel = rows = r[1];  // (k,) ascending
    if (need_w) vals = r[2];
    if (need_b) {
      gb = cfg.sparsify_bias ? torch::zeros({out}, g.options()).index_copy_(0, sel, g.index_select(1, sel).sum(0))
                             : g.sum(0);
    }
    if (tracked(cfg.acc)) {  // every example "selected" the k columns: its non-zero entries there count
      AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "unified_record", [&] {
        const scalar_t* gp = g.data_ptr<scalar_t>();
        const int64_t* ip = sel.data_ptr<int64_t>();
        int64_t* cp = cfg.counts.data_ptr<int64_t>();
        for (int64_t t = 0; t < k; ++t) {
          int64_t c = n;
          if (!cfg.count_zero_hits) {
            c = 0;
            for (int64_t b = 0; b < n; ++b) c += gp[b * out + ip[t]] != scalar_t(0);
          }
          cp[ip[t]] += c;
        }
      });
    }
    touched = computed = k;
  } else {
    Tensor given;
    if (cfg.mode == 1) {  // as select_random: the default dtype, the global generator
      given = std::get<1>(at::rand(g.sizes(), at::TensorOptions().device(g.device())).topk(k, 1, true, false));
    } else {
      given = torch::empty({0, 0});
    }
    Tensor counts = tracked(cfg.acc) ? cfg.counts : torch::empty({0, 0});
    if (aw && need_w) {  // W's rows updated in place, its gradient never stored
      auto r = topk_backward_adam(g, x.contiguous(), W, k, given, cfg.scale, need_x, need_b, cfg.sparsify_bias, counts,
                                  cfg.count_zero_hits, aw->m, aw->v, aw->step, aw->lr, aw->b1, aw->b2, aw->eps);
      if (need_x) gx = r[0];
      if (need_b) gb = r[1];
      sel = r[2];
      rows = r[4];
      need_w = false;  // nothing to return
    } else {
      auto r = topk_backward(g, x.contiguous(), W.contiguous(), k, given, cfg.scale, need_x, need_b,
                             cfg.sparsify_bias, torch::empty({0, 0}), need_w, counts, cfg.count_zero_hits);
      if (need_x) gx = r[0];
      if (need_b) gb = r[1];
      sel = r[2];
      rows = r[4];
      vals = r[5];
    }
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
  if (tracked(cfg.acc)) {
    int64_t* a = cfg.acc.data_ptr<int64_t>();
    const int64_t prods = int64_t(need_x) + int64_t(wants_w);
    a[0] += 1;
    a[1] += n;
    a[2] = touched;
    a[3] += touched;
    a[4] += n * computed * in * prods;
    a[5] += n * out * in * prods;
    a[6] = 1;
    Tensor last = cfg.last;
    last.set_(sel);
  }
  return {gx, gw, gb};
}

void save_cfg(AutogradContext* ctx, const std::string& p, const NativeCfg& cfg) {
  auto& d = ctx->saved_data;
  d[p + "k"] = cfg.k;
  d[p + "mode"] = cfg.mode;
  d[p + "scale"] = cfg.scale;
  d[p + "sb"] = cfg.sparsify_bias;
  d[p + "wg"] = cfg.weight_grad;
  d[p + "czh"] = cfg.count_zero_hits;
  if (tracked(cfg.acc)) {
    d[p + "counts"] = cfg.counts;
    d[p + "acc"] = cfg.acc;
    d[p + "last"] = cfg.last;
  }
}

NativeCfg load_cfg(AutogradContext* ctx, const std::string& p) {
  auto& d = ctx->saved_data;
  NativeCfg cfg{d[p + "k"].toInt(), d[p + "mode"].toInt(), d[p + "scale"].toDouble(), d[p + "sb"].toBool(),
                d[p + "wg"].toInt(), d[p + "czh"].toBool(), Tensor(), Tensor(), Tensor()};
  if (d.count(p + "acc")) {
    cfg.counts = d[p + "counts"].toTensor();
    cfg.acc = d[p + "acc"].toTensor();
    cfg.last = d[p + "last"].toTensor();
  }
  return cfg;
}

struct MePropNativeFn : public torch::autograd::Function<MePropNativeFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& W, const std::optional<Tensor>& b,
                        const NativeCfg& cfg) {
    ctx->save_for_backward({x, W});
    save_cfg(ctx, "", cfg);
    ctx->saved_data["has_b"] = b.has_value() && b->defined();
    if (b.has_value() && b->defined()) return at::addmm(*b, x, W.t());
    return at::mm(x, W.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const bool has_b = ctx->saved_data["has_b"].toBool();
    const bool need_b = has_b && ctx->needs_input_grad(2);
    auto r = layer_backward(grad_outputs[0], saved[0], saved[1], ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                            need_b, load_cfg(ctx, ""));
    return {r[0], r[1], r[2], Tensor()};
  }
};

// ReLU backward in place: g = 0 where the ReLU output h <= 0 (as PyTorch's threshold_backward on the result)
Tensor relu_backward_(Tensor g, const Tensor& h) {
  TORCH_CHECK(g.is_contiguous() && g.sizes() == h.sizes() && g.scalar_type() == h.scalar_type(),
              "relu_backward_: g and h must be contiguous and alike");
  Tensor hc = h.contiguous();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "relu_backward_", [&] {
    scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* hp = hc.data_ptr<scalar_t>();
    const int64_t n = g.numel();
    for (int64_t i = 0; i < n; ++i) gp[i] = hp[i] <= scalar_t(0) ? scalar_t(0) : gp[i];
  });
  return g;
}

// The whole ReLU MLP (hidden layers with meProp, then the output layer) as ONE autograd node: the forward runs
// addmm + relu per hidden layer and addmm for the output; the backward runs every layer's backward (output
// first, as autograd would) with the ReLU masks in between, so a training step's backward is the loss's nodes
// plus this one native call. params = [W0, b0, W1, b1, ..., W_out, b_out] (every layer with a bias); cfgs one
// per layer. Gradients are bit-equal to the per-layer native functions (same kernels, same order, same random
// draws).
struct MePropMLPNativeFn : public torch::autograd::Function<MePropMLPNativeFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, at::TensorList params, const std::vector<NativeCfg>& cfgs,
                        const std::vector<Tensor>& adam_state, const std::vector<double>& adam_hp) {
    const int64_t L = int64_t(cfgs.size());
    ctx->saved_data["adam"] = !adam_state.empty();
    if (!adam_state.empty()) {
      ctx->saved_data["adam_state"] = adam_state;
      ctx->saved_data["adam_hp"] = adam_hp;
    }
    std::vector<Tensor> save{x};
    Tensor h = x;
    for (int64_t l = 0; l < L; ++l) {
      const Tensor& W = params[2 * l];
      const Tensor& b = params[2 * l + 1];
      h = at::addmm(b, h, W.t());
      if (l + 1 < L) {
        h.relu_();
        save.push_back(h);
      }
      save_cfg(ctx, std::to_string(l) + ".", cfgs[l]);
    }
    for (const Tensor& p : params) save.push_back(p);
    ctx->save_for_backward(save);
    ctx->saved_data["L"] = L;
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const int64_t L = ctx->saved_data["L"].toInt();
    // saved: x, h_0 .. h_{L-2} (the hidden activations), then the params
    variable_list grads(1 + 2 * L + 3);
    const bool adam = ctx->saved_data["adam"].toBool();
    std::vector<Tensor> adam_state;
    std::vector<double> hp;
    if (adam) {
      adam_state = ctx->saved_data["adam_state"].toTensorVector();
      hp = ctx->saved_data["adam_hp"].toDoubleVector();
    }
    Tensor g = grad_outputs[0];
    for (int64_t l = L - 1; l >= 0; --l) {
      const Tensor& in = saved[l];  // the layer's input: x for l = 0, else h_{l-1}
      const Tensor& W = saved[L + 2 * l];
      const bool need_x = l > 0 || ctx->needs_input_grad(0);
      const NativeCfg cfg = load_cfg(ctx, std::to_string(l) + ".");
      const bool need_w = ctx->needs_input_grad(1 + 2 * l);
      AdamW aw;
      bool w_in_kernel = false;
      if (adam && cfg.k > 0 && cfg.mode != 2 && need_w) {  // W's update inside the top-k kernel, row by row
        // (unified: the k rows come from one product; they take the stored-gradient step below)
        float* st = adam_state[3 * (2 * l) + 2].data_ptr<float>();
        *st += 1.0f;
        aw = AdamW{adam_state[3 * (2 * l)], adam_state[3 * (2 * l) + 1], double(*st), hp[0], hp[1], hp[2], hp[3]};
        w_in_kernel = true;
      }
      auto r = layer_backward(g, in, W, need_x, need_w, ctx->needs_input_grad(2 + 2 * l), cfg,
                              w_in_kernel ? &aw : nullptr);
      if (w_in_kernel) W.unsafeGetTensorImpl()->bump_version();
      if (adam) {  // LazyAdam's update of this layer now, its gradient never stored (see meprop_mlp_native)
        for (int64_t j = 0; j < 2; ++j) {
          const Tensor& grad = r[1 + j];
          if (!grad.defined()) continue;
          const int64_t i = 2 * l + j;
          Tensor p = saved[L + i];
          adam_param_step(p, grad, adam_state[3 * i], adam_state[3 * i + 1], adam_state[3 * i + 2], hp[0], hp[1],
                          hp[2], hp[3]);
          p.unsafeGetTensorImpl()->bump_version();  // the graph's saved copy is stale now
        }
      } else {
        grads[1 + 2 * l] = r[1];
        grads[2 + 2 * l] = r[2];
      }
      if (l > 0) {
        g = relu_backward_(r[0], in);
      } else {
        grads[0] = r[0];
      }
    }
    return grads;
  }
};

// The benchmark's floor (bench_backward_floor): ONE C++ backward node that does no work and returns no gradient,
// standing where a whole-network node would (inputs x and params, output (N, out) zeros).
struct NoWorkFn : public torch::autograd::Function<NoWorkFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, at::TensorList params, int64_t out) {
    ctx->saved_data["n"] = int64_t(1 + params.size());
    return torch::zeros({x.size(0), out}, x.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return variable_list(ctx->saved_data["n"].toInt() + 1);  // x, each param, out: all undefined
  }
};

Tensor no_work_node(const Tensor& x, std::vector<Tensor> params, int64_t out) {
  return NoWorkFn::apply(x, at::TensorList(params), out);
}

// x (N, in), W (out, in), b (out,) or None. acc/counts/last: the layer's stats tensors, or empty.
Tensor meprop_linear_native(const Tensor& x, const Tensor& W, const std::optional<Tensor>& b, int64_t k, int64_t mode,
                            double scale, bool sparsify_bias, int64_t weight_grad, bool count_zero_hits,
                            const Tensor& counts, const Tensor& acc, const Tensor& last) {
  TORCH_CHECK(x.device().is_cpu() && W.device().is_cpu(), "meprop_linear_native runs on the CPU");
  TORCH_CHECK(x.dim() == 2 && W.dim() == 2 && x.size(1) == W.size(1), "meprop_linear_native: x (N, in), W (out, in)");
  TORCH_CHECK(k >= 0 && k <= W.size(0), "meprop_linear_native: k must be in [0, out]");
  TORCH_CHECK(weight_grad == 0 || weight_grad == 1, "meprop_linear_native: weight_grad 0 (dense) or 1 (sparse)");
  TORCH_CHECK(!tracked(acc) || (acc.scalar_type() == torch::kLong && acc.numel() >= 7 && acc.is_contiguous() &&
                                counts.scalar_type() == torch::kLong && counts.numel() == W.size(0)),
              "meprop_linear_native: acc must be (7,) int64 and counts (out,) int64");
  TORCH_CHECK(mode >= 0 && mode <= 2, "meprop_linear_native: mode 0 (per_example), 1 (random) or 2 (unified)");
  NativeCfg cfg{k, mode, scale, sparsify_bias, weight_grad, count_zero_hits, counts, acc, last};
  return MePropNativeFn::apply(x, W, b, cfg);
}


// x (N, in); params [W0, b0, ..., W_out, b_out]; per-layer lists of the same settings as meprop_linear_native.
Tensor meprop_mlp_native(const Tensor& x, std::vector<Tensor> params, std::vector<int64_t> ks, std::vector<int64_t> modes,
                         std::vector<double> scales, bool sparsify_bias, int64_t weight_grad, bool count_zero_hits,
                         std::vector<Tensor> counts, std::vector<Tensor> accs, std::vector<Tensor> lasts,
                         std::vector<Tensor> adam_state, std::vector<double> adam_hp) {
  const size_t L = ks.size();
  TORCH_CHECK(L >= 1 && params.size() == 2 * L && modes.size() == L && scales.size() == L && counts.size() == L &&
                  accs.size() == L && lasts.size() == L,
              "meprop_mlp_native: params must be [W, b] per layer and every per-layer list of the same length");
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2, "meprop_mlp_native: x (N, in) on the CPU");
  TORCH_CHECK(weight_grad == 0 || weight_grad == 1, "meprop_mlp_native: weight_grad 0 (dense) or 1 (sparse)");
  int64_t width = x.size(1);
  std::vector<NativeCfg> cfgs;
  for (size_t l = 0; l < L; ++l) {
    const Tensor& W = params[2 * l];
    const Tensor& b = params[2 * l + 1];
    TORCH_CHECK(W.dim() == 2 && W.size(1) == width && b.dim() == 1 && b.size(0) == W.size(0),
                "meprop_mlp_native: layer ", l, " has W ", W.sizes(), " and b ", b.sizes(), " after width ", width);
    TORCH_CHECK(ks[l] >= 0 && ks[l] <= W.size(0), "meprop_mlp_native: k of layer ", l, " must be in [0, out]");
    TORCH_CHECK(!tracked(accs[l]) || (accs[l].scalar_type() == torch::kLong && accs[l].numel() >= 7 &&
                                      counts[l].scalar_type() == torch::kLong && counts[l].numel() == W.size(0)),
                "meprop_mlp_native: acc must be (7,) int64 and counts (out,) int64");
    width = W.size(0);
    TORCH_CHECK(modes[l] >= 0 && modes[l] <= 2, "meprop_mlp_native: mode of layer ", l, " must be 0, 1 or 2");
    cfgs.push_back(NativeCfg{ks[l], modes[l], scales[l], sparsify_bias, weight_grad, count_zero_hits, counts[l],
                             accs[l], lasts[l]});
  }
  if (!adam_state.empty()) {
    TORCH_CHECK(adam_state.size() == 6 * L && adam_hp.size() == 4,
                "meprop_mlp_native: adam_state must be (exp_avg, exp_avg_sq, step) per parameter, adam_hp (lr, beta1, "
                "beta2, eps)");
    for (size_t i = 0; i < 2 * L; ++i) {
      const Tensor& p = params[i];
      TORCH_CHECK(p.is_contiguous() && adam_state[3 * i].sizes() == p.sizes() && adam_state[3 * i].is_contiguous() &&
                      adam_state[3 * i + 1].sizes() == p.sizes() && adam_state[3 * i + 1].is_contiguous() &&
                      adam_state[3 * i].scalar_type() == p.scalar_type() &&
                      adam_state[3 * i + 1].scalar_type() == p.scalar_type() &&
                      adam_state[3 * i + 2].scalar_type() == torch::kFloat && adam_state[3 * i + 2].numel() == 1,
                  "meprop_mlp_native: the Adam state of parameter ", i, " does not match it");
    }
  }
  return MePropMLPNativeFn::apply(x, at::TensorList(params), cfgs, adam_state, adam_hp);
}

}  // namespace

void init_native(pybind11::module& m) {
  m.def("meprop_linear_native", &meprop_linear_native,
        "meProp linear layer as a C++ autograd function: addmm forward, fused top-k backward (CPU)",
        pybind11::arg("x"), pybind11::arg("W"), pybind11::arg("b"), pybind11::arg("k"), pybind11::arg("mode"),
        pybind11::arg("scale"), pybind11::arg("sparsify_bias"), pybind11::arg("weight_grad"),
        pybind11::arg("count_zero_hits"), pybind11::arg("counts"), pybind11::arg("acc"), pybind11::arg("last"));
  m.def("dense_backward", &dense_backward,
        "the dense backward {dx, dW, db}: native loops for a narrow layer at a small batch, else BLAS");
  m.def("no_work_node", &no_work_node, "a C++ autograd node whose backward does no work (the benchmark's floor)",
        pybind11::arg("x"), pybind11::arg("params"), pybind11::arg("out"));
  m.def("meprop_mlp_native", &meprop_mlp_native,
        "a ReLU MLP of meProp layers as ONE C++ autograd function (forward addmm + relu, backward every layer's "
        "fused top-k backward)",
        pybind11::arg("x"), pybind11::arg("params"), pybind11::arg("ks"), pybind11::arg("modes"),
        pybind11::arg("scales"), pybind11::arg("sparsify_bias"), pybind11::arg("weight_grad"),
        pybind11::arg("count_zero_hits"), pybind11::arg("counts"), pybind11::arg("accs"), pybind11::arg("lasts"),
        pybind11::arg("adam_state"), pybind11::arg("adam_hp"));
}
