"""The whole MLP as ONE C++ autograd node: an opt-in fast model next to the teaching ``MLP``.

``NativeMLP`` is an ``MLP`` (same layers, parameters and state_dict keys, so the two load
each other's weights) whose forward runs the whole network as one native autograd node
(``fused.meprop_mlp_native``) when every layer has ``kernel="native"`` and nothing needs
the per-layer path (no meSimp record hooks, no activation observer, no active dropout, no
PyTorch module hooks). The result is bit-equal to the per-layer native layers (tested);
only the time differs: one node instead of one per layer. ``step_in_backward(opt)`` goes
further and applies a ``LazyAdam`` inside that backward (notebook 09 shows both).
``training.train`` builds a ``NativeMLP`` for ``kernel="native"``; read ``MLP`` to learn the
method, this file to see how the speed is bought.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from ..lazy import LazyAdam
from ..meprop import _fused, autocast_dtype, refuse_distributed
from .mlp import MLP

__all__ = ["NativeMLP"]


class NativeMLP(MLP):
    """An ``MLP`` whose layers default to ``kernel="native"`` and whose forward is one C++ autograd node
    where it applies (``fuse_native = False`` turns that off: the per-layer native layers then run).
    Arguments as ``MLP``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel", "native")
        super().__init__(*args, **kwargs)
        self.fuse_native = True  # the whole network as one C++ autograd node where it applies

    def _whole_native(self, x: torch.Tensor) -> bool:
        """Whether this forward can run as ONE C++ autograd node (``meprop_mlp_native``): every layer
        kernel="native" without hooks (meSimp records take the per-layer path), no activation observer (meAct), no active dropout,
        every layer with a bias and the same weight-gradient settings, and a graph to build. Bit-equal to the
        per-layer native layers; ``fuse_native = False`` turns it off."""
        layers = self.meprop_layers()
        if not self.fuse_native or x.dim() != 2 or self.activation_observer is not None or not torch.is_grad_enabled():
            return False
        if self.training and not isinstance(self.dropout, nn.Identity):
            return False
        first = layers[0]
        for layer in layers:
            if layer.kernel != "native" or layer.hooks or layer.bias is None:
                return False
            if not (layer.weight.requires_grad and layer.bias.requires_grad):
                return False
            if layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks or layer._backward_pre_hooks:
                return False  # PyTorch module hooks on a layer: they run on the per-layer path
            if (layer.weight_grad, layer.sparsify_bias, layer.count_zero_hits) != (
                    first.weight_grad, first.sparsify_bias, first.count_zero_hits):
                return False
        return True

    def __getstate__(self):
        """Pickling and deepcopy leave out the cached native call and the optimizer of ``step_in_backward``
        (a copy stores its gradients as usual until ``step_in_backward`` is called on it)."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_native_cache", None)
        state["_backward_opt"] = None
        return state

    def _native_key(self) -> tuple:
        """Everything the whole-network call depends on, read cheaply (ids of the tensors and of the record,
        which the cached call keeps alive, so no id is reused while it is cached)."""
        opt = self.__dict__.get("_backward_opt")
        ostate = None if opt is None else opt.state
        key = [self.fuse_native, self.training, self.__dict__["_activation_observer"] is None, id(self._modules["dropout"]),
               bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                    or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks), id(opt)]
        for layer in (*self._modules["hidden"]._modules.values(), self._modules["output"]):
            d, prm = layer.__dict__, layer._parameters
            w, b, st = prm["weight"], prm["bias"], d["stats"]
            sd = st.__dict__
            key += [id(layer), id(w), id(b), w.shape, w.dtype, w.device, w.requires_grad,
                    b is not None and b.requires_grad, d["kernel"], d["_k"], d["mode"], d["rescale"],
                    d["sparsify_bias"], d["weight_grad"], d["count_zero_hits"], d["track_stats"], id(st),
                    id(sd.get("_native")), id(sd.get("counts")), bool(d["hooks"]),
                    bool(d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"]
                         or d["_backward_pre_hooks"])]
            if ostate is not None:  # the optimizer's state tensors themselves (cleared, reloaded, replaced)
                for p in (w, b):
                    ps = ostate.get(p)
                    key.append(None if not ps else (id(ps.get("exp_avg")), id(ps.get("exp_avg_sq")),
                                                    id(ps.get("step"))))
        return tuple(key)

    def _native_call(self, x: torch.Tensor):
        """The cached arguments of ``meprop_mlp_native`` for this model's current state, or None when the
        whole-network node does not apply (see ``_whole_native``)."""
        if x.dim() != 2 or not torch.is_grad_enabled() or autocast_dtype(x.device.type) is not None:
            return None  # under autocast the layers cast around their own native calls
        key = self._native_key()
        cached = self.__dict__.get("_native_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        call = self._native_args_all() if self._whole_native(x) else None
        self.__dict__["_native_cache"] = (key, call)
        return call

    def _native_args_all(self) -> tuple:
        layers = self.meprop_layers()
        args = [layer._native_args() for layer in layers]  # checks every layer can run natively
        params = [t for layer in layers for t in (layer.weight, layer.bias)]
        first = layers[0]
        opt, adam_state = self.__dict__.get("_backward_opt"), []
        if opt is not None and self._backward_opt_applies(opt, layers, params):
            for p in params:
                st = opt._state(p)
                adam_state += [st["exp_avg"], st["exp_avg_sq"], st["step"]]
        return (params, [a[0] for a in args], [a[1] for a in args], [a[2] for a in args], first.sparsify_bias,
                first.weight_grad == "sparse", first.count_zero_hits, [a[3] for a in args], [a[4] for a in args],
                [a[5] for a in args], adam_state)

    @staticmethod
    def _backward_opt_applies(opt, layers, params) -> bool:
        """The in-backward update is the optimizer's own only with row-sparse weight gradients (LazyAdam updates
        a dense gradient's every row) and while the optimizer holds exactly these parameters; otherwise the
        gradients are stored and ``opt.step()`` applies them."""
        if any(layer.weight_grad != "sparse" for layer in layers) or len(opt.param_groups) != 1:
            return False
        held = {id(p) for p in opt.param_groups[0]["params"]}
        return len(held) == len(params) and all(id(p) in held for p in params)

    def step_in_backward(self, optimizer) -> None:
        """Apply ``optimizer`` (a ``LazyAdam`` over exactly this model's parameters, one group) inside the
        backward: each layer's gradient goes straight into the update as soon as it is computed, and is never
        stored (``p.grad`` stays None, so ``optimizer.step()`` then finds nothing left to do). The same update
        as ``optimizer.step()`` after ``backward()``, bit for bit (tested); only the timing differs: no
        gradient tensors written and read back, no gradient accumulation, no separate optimizer pass.
        Gradients cannot be inspected, clipped or accumulated over several backward passes this way, and the
        loss must reach the parameters only through one forward of this model per backward (a penalty on the
        weights added to the loss would leave a stored gradient that ``optimizer.step()`` applies as a second
        update).

        It applies while the model runs as one native node (``kernel="native"`` and ``weight_grad="sparse"``
        everywhere, no meSimp hooks, no meAct, no PyTorch module hooks on the layers, no active dropout) and
        the optimizer holds exactly the model's parameters; otherwise backward stores the gradients as usual
        and ``optimizer.step()`` applies them. ``step_in_backward(None)`` turns it off. A lazy optimizer is
        not the paper's optimizer (see ``mesimp_lib.lazy``)."""
        if optimizer is None:
            self.__dict__["_backward_opt"] = None
            return
        refuse_distributed("step_in_backward")
        if not isinstance(optimizer, LazyAdam):
            raise TypeError(f"step_in_backward takes a mesimp_lib.lazy.LazyAdam, not {type(optimizer).__name__}")
        mine = [id(p) for p in self.parameters()]
        groups = optimizer.param_groups
        if len(groups) != 1 or sorted(id(p) for p in groups[0]["params"]) != sorted(mine):
            raise ValueError("step_in_backward: the optimizer must have one parameter group holding exactly this "
                             "model's parameters")
        dense = [i for i, layer in enumerate(self.meprop_layers()) if layer.weight_grad != "sparse"]
        if dense:
            raise ValueError(f"step_in_backward needs weight_grad='sparse' on every layer (layers {dense} have "
                             "another): LazyAdam updates every row of a dense weight gradient")
        self.__dict__["_backward_opt"] = optimizer


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        call = self._native_call(x)
        if call is None:
            return super().forward(x)  # the per-layer path
        if x.shape[-1] != call[0][0].shape[1]:
            raise ValueError(f"input has {x.shape[-1]} features in its last dimension; this model expects "
                             f"in_features={call[0][0].shape[1]}")
        opt = self.__dict__.get("_backward_opt")
        if opt is not None or call[5]:  # an in-backward step or row-sparse weight gradients
            refuse_distributed("step_in_backward" if opt is not None else "weight_grad='sparse'")
        if opt is None:
            hp = []
        else:  # read every step: a scheduler may have changed the learning rate
            group = opt.param_groups[0]
            hp = [group["lr"], group["betas"][0], group["betas"][1], group["eps"]]
        return _fused().meprop_mlp_native(x, *call, hp)
