"""POS tagging on UD English EWT with a BiLSTM tagger (METHODS.md section 4).

The paper's setting: one bidirectional LSTM layer, h = 500 per direction, meProp on the
gates (k = 5..20 per gate), a dense output layer, mini-batch 1 sentence, Adam. Here the
data is UD English EWT (UPOS or XPOS tags) instead of the Penn Treebank.

Model: word embeddings learned from scratch (``embed_dim``, default 100; training words
seen fewer than ``min_count`` times become ``<unk>``) -> a forward and a backward
``MePropLSTM`` -> concatenation (2h) -> a dense output layer over the tags. Metric: token
accuracy over every token of dev / test.

Batching: sentences are shuffled, cut into pools of 50 batches, sorted by length inside a
pool and batched (``batch_size`` sentences), then the batch order is shuffled, so a batch
holds sentences of similar length and padding is small; padding never reaches the model
(``MePropLSTM`` packs the batch).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..lstm import LSTMSimplifier, MePropLSTM, step_backward
from ..meprop import MePropLinear
from .ud import Treebank, Vocab, load_ud

__all__ = ["BiLSTMTagger", "PosData", "batches", "encode_pos", "step_backward", "tagging_accuracy", "train_pos"]

POOL = 50  # batches per length-sorting pool


@dataclass
class PosData:
    """Encoded splits: lists of (word ids, tag ids) LongTensor pairs, one per sentence."""

    words: Vocab
    tags: Vocab
    tagset: str
    train: list[tuple[torch.Tensor, torch.Tensor]]
    dev: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]

    def __repr__(self) -> str:
        tok = sum(len(w) for w, _ in self.train)
        return (f"PosData(tagset={self.tagset}, train={len(self.train)} sentences / {tok} tokens, "
                f"dev={len(self.dev)}, test={len(self.test)}, vocab={len(self.words)}, tags={len(self.tags)})")


def encode_pos(treebank: Treebank | None = None, tagset: str = "upos", min_count: int = 2,
               train_limit: int | None = None) -> PosData:
    """Index the treebank. The word vocabulary comes from the training sentences used (the
    first ``train_limit``); the tag vocabulary from all three splits (the tag set is the
    annotation scheme's, not learned)."""
    if tagset not in ("upos", "xpos"):
        raise ValueError(f"tagset={tagset!r} is not allowed; allowed: upos, xpos")
    if train_limit is not None and (isinstance(train_limit, bool) or not isinstance(train_limit, int)
                                    or train_limit < 1):
        raise ValueError(f"train_limit={train_limit!r} must be None or an int >= 1")
    tb = treebank if treebank is not None else load_ud()
    train = tb.train[:train_limit] if train_limit is not None else tb.train
    words = Vocab.build((w for s in train for w in s.words), min_count=min_count)
    tags = Vocab.build((t for split in (tb.train, tb.dev, tb.test) for s in split for t in s.tags(tagset)),
                       specials=())

    def enc(split):
        return [(torch.tensor(words.encode(s.words)), torch.tensor(tags.encode(s.tags(tagset)))) for s in split]

    return PosData(words, tags, tagset, enc(train), enc(tb.dev), enc(tb.test))


def _pad(items):
    lengths = torch.tensor([len(w) for w, _ in items])
    words = nn.utils.rnn.pad_sequence([w for w, _ in items], batch_first=True, padding_value=0)
    tags = nn.utils.rnn.pad_sequence([t for _, t in items], batch_first=True, padding_value=-100)
    return words, tags, lengths  # (B, T), (B, T) with -100 at padding, (B,)


def batches(items, batch_size: int, generator: torch.Generator | None = None):
    """Length-bucketed batches ``(words (B, T), tags (B, T), lengths (B,))``.

    With a generator: shuffle, sort by length inside pools of ``POOL`` batches, shuffle the
    batch order (training). Without: sorted by length (evaluation)."""
    if generator is None:
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        perm = torch.randperm(len(items), generator=generator).tolist()
        pool = batch_size * POOL
        groups = []
        for p in range(0, len(perm), pool):
            chunk = sorted(perm[p:p + pool], key=lambda i: len(items[i][0]))
            groups += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    return [_pad([items[i] for i in g]) for g in groups]


class BiLSTMTagger(nn.Module):
    """Embeddings -> forward + backward ``MePropLSTM`` -> dense output layer over 2h.

    Args:
        vocab_size, n_tags: sizes; word id 0 is ``<pad>``.
        embed_dim: word embedding size (learned from scratch).
        hidden: cells per direction (the paper: 500).
        k, mode: meProp on every gate of both directions (None = dense).
        k_out: meProp on the output layer (None = dense, as the paper).
        dropout: dropout on the embeddings and on the BiLSTM output.
    """

    def __init__(self, vocab_size: int, n_tags: int, embed_dim: int = 100, hidden: int = 500, k=None,
                 mode: str = "per_example", k_out=None, dropout: float = 0.0, device=None, **lstm_kwargs):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0, device=device)
        self.fwd = MePropLSTM(embed_dim, hidden, k, mode, reverse=False, device=device, **lstm_kwargs)
        self.bwd = MePropLSTM(embed_dim, hidden, k, mode, reverse=True, device=device, **lstm_kwargs)
        self.output = MePropLinear(2 * hidden, n_tags, k_out, mode, device=device)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def widths(self) -> list[int]:
        """Cells per direction [forward, backward]."""
        return [self.fwd.hidden_size, self.bwd.hidden_size]

    @property
    def lstms(self) -> list[MePropLSTM]:
        return [self.fwd, self.bwd]

    def set_k(self, k) -> None:
        self.fwd.k = k
        self.bwd.k = k

    def forward(self, words: torch.Tensor, lengths) -> torch.Tensor:
        """words (B, T) ids, lengths (B,) -> logits (B, T, n_tags) (padding rows are junk: mask them)."""
        e = self.dropout(self.embed(words))  # (B, T, E)
        hcat = torch.cat([self.fwd(e, lengths), self.bwd(e, lengths)], dim=2)  # (B, T, h_f + h_b)
        return self.output(self.dropout(hcat))


@torch.no_grad()
def tagging_accuracy(model: nn.Module, eval_batches) -> float:
    """Token accuracy over pre-built batches (``batches(items, n)``); eval mode restored."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for words, tags, lengths in eval_batches:
        words, tags = words.to(device), tags.to(device)
        pred = model(words, lengths).argmax(2)
        m = tags != -100
        correct += int((pred[m] == tags[m]).sum())
        total += int(m.sum())
    model.train(was)
    return correct / max(1, total)


def build_tagger(config, data: PosData) -> BiLSTMTagger:
    hidden = config.hidden
    if isinstance(hidden, list):
        if len(hidden) != 1:
            raise ValueError(f"hidden={hidden!r}: the POS tagger has one BiLSTM layer, give one width")
        hidden = hidden[0]
    return BiLSTMTagger(len(data.words), len(data.tags), config.embed_dim or 100, hidden, config.hidden_k,
                        config.hidden_mode, config.k_out, config.dropout, device=config.device,
                        rescale=config.rescale)


def train_pos(config, data: PosData | None = None, progress: bool = True, on_eval=None,
              return_model: bool = False) -> dict:
    """Train the BiLSTM tagger as ``config`` (a ``TrainConfig`` with ``task="pos"``) says.

    Returns the result dict of ``training._train`` (accuracies are token accuracies) plus
    ``"data"``. ``data``: a ``PosData`` (default: UD EWT encoded with the config's tagset,
    min_count and train_limit). Called through ``training.train``, which sets the threads.
    """
    from ..mesimp import cycle_phase, reset_optimizer_state
    from ..results import environment
    from ..training import _Timer, make_optimizer

    device = torch.device(config.device)
    env = environment()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    if data is None:
        data = encode_pos(tagset=config.tagset, min_count=config.min_count, train_limit=config.train_limit)
    train_items = data.train[: config.train_limit] if config.train_limit is not None else data.train
    model = build_tagger(config, data).to(device)
    opt = make_optimizer(config, model.parameters())
    dev_batches = batches(data.dev, 256)
    test_batches = batches(data.test, 256)

    n = len(train_items)
    steps_per_epoch = math.ceil(n / config.batch_size)
    eval_every = max(1, math.ceil(steps_per_epoch / config.evals_per_epoch))
    timer = _Timer(config.device)
    history: list[dict] = []
    rows_changed: list[list[float]] = []
    rows_grad: list[list[float]] = []
    updates: list[dict] = []
    best = {"dev_acc": -1.0}
    loss_sum, loss_n, step = 0.0, 0, 0
    epoch_s: list[float] = []

    def evaluate(epoch_float: float) -> None:
        nonlocal loss_sum, loss_n
        timer.start()
        point = {
            "step": step,
            "epoch": round(epoch_float, 4),
            "train_loss": round(loss_sum / max(1, loss_n), 6),
            "dev_acc": tagging_accuracy(model, dev_batches),
            "test_acc": tagging_accuracy(model, test_batches),
        }
        timer.stop("eval_s")
        loss_sum, loss_n = 0.0, 0
        history.append(point)
        if point["dev_acc"] > best["dev_acc"]:
            best.update(point)
        if on_eval is not None:
            on_eval(point, model)
        bar.set_postfix(dev=f"{point['dev_acc']:.4f}", refresh=False)

    simp = None
    widths_history: list[dict] = []
    n_params_start = sum(p.numel() for p in model.parameters())
    if config.method == "mesimp":
        simp = LSTMSimplifier(model.lstms, model.output, config.prune_rate, config.realisation, config.record,
                              config.count_zero_hits, config.min_units)
        widths_history.append({"step": 0, "epoch": 0.0, "widths": simp.widths, "removed": [0, 0],
                               "kept_minimum": [False, False], "dev_acc": None})
        k_prunes = min(config.prunes_per_epoch, steps_per_epoch)
        prune_after = {round((p + 1) * steps_per_epoch / k_prunes) - 1 for p in range(k_prunes)}

    def prune(epoch_float: float) -> None:
        event = simp.prune(opt)
        timer.start()
        dev = tagging_accuracy(model, dev_batches)
        timer.stop("eval_s")
        widths_history.append({"step": step, "epoch": round(epoch_float, 4), "widths": event["widths"],
                               "removed": event["removed"], "kept_minimum": event["kept_minimum"], "dev_acc": dev})

    bar = tqdm(total=steps_per_epoch * config.epochs, desc=f"pos {config.method}", disable=not progress,
               mininterval=1.0)
    t_total = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        t_epoch, eval_before = time.perf_counter(), timer.totals["eval_s"]
        pruning = False
        if simp is not None:
            _, pruning = cycle_phase(epoch, config.cycle_epochs)
            if epoch > 0 and epoch % config.cycle_epochs == 0:  # a new cycle: re-initialise the optimizer
                if config.reset == "fresh":
                    opt = make_optimizer(config, model.parameters())
                else:
                    reset_optimizer_state(opt)
        for i, (words, tags, lengths) in enumerate(batches(train_items, config.batch_size, gen)):
            words, tags = words.to(device), tags.to(device)
            timer.start()
            logits = model(words, lengths)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.reshape(-1), ignore_index=-100)
            timer.stop("forward_s")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
            timer.stop("backward_s")
            measure = config.rows_every and step % config.rows_every == 0
            if measure:
                gate_weights = [l.weight_hh for l in model.lstms]
                before = [w.detach().clone() for w in gate_weights]
                before_all = [p.detach().clone() for p in model.parameters()]
                rows_grad.append([0.0 if w.grad is None else (w.grad != 0).any(1).float().mean().item()
                                  for w in gate_weights])
                timer.start()
            opt.step()
            timer.stop("update_s")
            if measure:
                rows_changed.append([(w.detach() != b).any(1).float().mean().item()
                                     for w, b in zip(gate_weights, before)])
                change = sum(float((p.detach() - q).abs().sum()) for p, q in zip(model.parameters(), before_all))
                updates.append({"step": step, "epoch": round(epoch + i / steps_per_epoch, 4),
                                "mean_abs_update": change / sum(q.numel() for q in before_all)})
            step += 1
            loss_sum += loss.item()
            loss_n += 1
            bar.update(1)
            if pruning and i in prune_after:
                prune(epoch + (i + 1) / steps_per_epoch)
            if (i + 1) % eval_every == 0 or i + 1 == steps_per_epoch:
                evaluate(epoch + (i + 1) / steps_per_epoch)
        epoch_s.append(round(time.perf_counter() - t_epoch - (timer.totals["eval_s"] - eval_before), 3))
    bar.close()
    total_s = time.perf_counter() - t_total

    def mean_cols(rows: list[list[float]]) -> list[float]:
        return [round(sum(c) / len(c), 4) for c in zip(*rows)] if rows else []

    timing = {key: round(v, 3) for key, v in timer.totals.items()}
    timing.update(total_s=round(total_s, 3), steps=step, epoch_s=epoch_s)
    stats = [l.stats for l in model.lstms]
    extra = {}
    if simp is not None:
        simp.detach()
        n_params = sum(p.numel() for p in model.parameters())
        extra = {
            "widths_history": widths_history,
            "final_widths": simp.widths,
            "average_width": round(sum(simp.widths) / 2, 2),
            "params": {"start": n_params_start, "final": n_params, "ratio": round(n_params / n_params_start, 4)},
        }
    if return_model:
        extra["model"] = model
    return {
        "config": asdict(config),
        "command": config.to_cli() + " --json OUT.json",
        "best_dev_acc": best["dev_acc"],
        "test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "final_dev_acc": history[-1]["dev_acc"],
        "final_test_acc": history[-1]["test_acc"],
        "history": history,
        "timing": timing,
        "backprop_ratio": round(sum(l.backprop_ratio for l in model.lstms) / 2, 6),
        "widths": model.widths,
        "rows": {
            "note": "per LSTM direction [forward, backward], share of the [4h] gate-weight rows of weight_hh: "
            f"with a non-zero gradient / really changed by the optimizer step (sampled every {config.rows_every} "
            "steps)",
            "with_grad": mean_cols(rows_grad),
            "changed": mean_cols(rows_changed),
        },
        "updates": {
            "note": "mean |parameter change| per parameter of one optimizer step (the update the optimizer "
            f"really applied), sampled every {config.rows_every} steps",
            "samples": [{**u, "mean_abs_update": round(u["mean_abs_update"], 9)} for u in updates],
            "mean": round(sum(u["mean_abs_update"] for u in updates) / len(updates), 9) if updates else None,
        },
        "meprop": {
            "note": "per LSTM direction [forward, backward]: rows of the [4h] gate weights with a gradient per "
            "backward (union over the batch's tokens); multiply-adds of the backward products done / dense BPTT",
            "rows_touched_per_step": [round(s.mean_rows_touched_frac, 4) for s in stats],
            "backward_macs_ratio": [round(s.macs_ratio, 4) for s in stats],
        },
        "environment": env,
        "data": {
            "train_sentences": n,
            "train_tokens": sum(len(w) for w, _ in train_items),
            "vocab_size": len(data.words),
            "tags": len(data.tags),
            "tagset": data.tagset,
        },
        **extra,
    }
