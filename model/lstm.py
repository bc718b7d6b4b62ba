"""The LSTM next-item model: one config dataclass, one ``forward`` over sequences, and the
explicit one-event ``step`` that serving runs (exported to ONNX as is).

Per event the input is item embedding + event-type embedding + time-gap-bucket embedding.
The recurrent state (h, c) summarises the user's history; a first-order term (FPMC-style)
adds the current item's own embedding through a learned map, so item-to-item transitions are
scored as sharply as by a Markov chain. Scores cover the whole catalog by dot product with
the (tied) item embeddings plus a per-item bias. Options: separate first-order in/out tables
(``first_order_dim``) and a transition-count prior over each item's top successors in the
training data, weighted by learned scalars (``transitions``).

``forward`` (training, fused ``nn.LSTM``) and ``step`` (serving, explicit gate arithmetic)
are the same computation: tests/model/test_lstm.py proves T steps equal one forward over T.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from streamrec.model.gaps import N_GAP_BUCKETS


@dataclass(frozen=True)
class LSTMConfig:
    n_items: int  # item vocabulary size, including PAD (0) and OOV (1)
    n_event_types: int  # event-type vocabulary size, including PAD (0) and OTHER (1)
    n_gap_buckets: int = N_GAP_BUCKETS
    dim: int = 64  # embedding size (items, event types, gaps) and scoring space
    hidden: int = 128  # LSTM hidden size
    layers: int = 1
    dropout: float = 0.5
    first_order: bool = True  # FPMC-style term from the current item (see first_order_dim)
    first_order_dim: int = 0  # 0: the current item's embedding, mapped into the scoring space
    # of the tied item embeddings; > 0: separate in/out tables of this size (a factorized
    # transition matrix, as in FPMC), scored beside the recurrent term
    item_bias: bool = True
    transitions: int = 0  # > 0: a transition-count prior over each item's top-N successors in
    # the training data (N = this), weighted by learned scalars and added to the scores
    cosine: float = 0.0  # > 0: score by cosine similarity of query and output item vectors times
    # this scale (the per-item bias still adds popularity); 0: plain dot product

    def to_dict(self) -> dict:
        return asdict(self)


class LSTMRecommender(nn.Module):
    """Next-item LSTM. ``forward(items, types, gaps, state) -> (scores, state)``."""

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.dim, padding_idx=0)
        self.type_emb = nn.Embedding(cfg.n_event_types, cfg.dim, padding_idx=0)
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.proj = nn.Linear(cfg.hidden, cfg.dim)
        shared = cfg.first_order and cfg.first_order_dim == 0
        self.first = nn.Linear(cfg.dim, cfg.dim, bias=False) if shared else None
        self.fo_in = self.fo_out = None
        if cfg.first_order and cfg.first_order_dim > 0:
            self.fo_in = nn.Embedding(cfg.n_items, cfg.first_order_dim, padding_idx=0)
            self.fo_out = nn.Embedding(cfg.n_items, cfg.first_order_dim, padding_idx=0)
            nn.init.normal_(self.fo_in.weight, std=0.05)
            nn.init.normal_(self.fo_out.weight, std=0.05)
        self.norm = nn.LayerNorm(cfg.dim)
        self.bias = nn.Parameter(torch.zeros(cfg.n_items)) if cfg.item_bias else None
        if cfg.transitions > 0:
            # successor ids and counts per item (PAD-padded), filled by set_transitions()
            self.register_buffer("succ_idx", torch.zeros(cfg.n_items, cfg.transitions, dtype=torch.int64))
            self.register_buffer("succ_cnt", torch.zeros(cfg.n_items, cfg.transitions))
            self.trans_w = nn.Parameter(torch.tensor([0.5, 0.5]))  # weights of log1p(count), [count > 0]
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.type_emb.weight, std=0.05)
        nn.init.normal_(self.gap_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.type_emb.weight[0].zero_()

    def init_state(self, batch: int) -> tuple[Tensor, Tensor]:
        """A new user's state: zeros, shape [layers, batch, hidden] each."""
        z = torch.zeros(self.cfg.layers, batch, self.cfg.hidden)
        return z, z.clone()

    # ---- shared pieces -------------------------------------------------------------------
    def _embed(self, items: Tensor, types: Tensor, gaps: Tensor) -> Tensor:
        return self.item_emb(items) + self.type_emb(types) + self.gap_emb(gaps)

    def query(self, out: Tensor, items: Tensor) -> Tensor:
        """Scoring-space vector from the LSTM output and the current item (any leading dims):
        [..., dim], or [..., dim + first_order_dim] with separate first-order tables."""
        q = self.proj(self.drop(out))
        if self.first is not None:
            q = q + self.first(self.drop(self.item_emb(items)))
        q = self.norm(q)
        if self.fo_in is not None:
            q = torch.cat([q, self.drop(self.fo_in(items))], dim=-1)
        return q

    def output_table(self) -> Tensor:
        """[n_items, query size]: the item embeddings (tied), beside the first-order out table."""
        if self.fo_out is None:
            return self.item_emb.weight
        return torch.cat([self.item_emb.weight, self.fo_out.weight], dim=1)

    def set_transitions(self, succ_idx: Tensor, succ_cnt: Tensor) -> None:
        self.succ_idx.copy_(succ_idx)
        self.succ_cnt.copy_(succ_cnt)

    def transition_prior(self, cnt: Tensor) -> Tensor:
        return self.trans_w[0] * torch.log1p(cnt) + self.trans_w[1] * (cnt > 0).to(cnt.dtype)

    def score(self, q: Tensor, items: Tensor) -> Tensor:
        """Whole-catalog scores [..., n_items] for query vectors [..., q] computed after the
        events ``items`` [...] (the current items feed the transition prior)."""
        table = self.output_table()
        if self.cfg.cosine > 0:
            q = self.cfg.cosine * nn.functional.normalize(q, dim=-1)
            table = nn.functional.normalize(table, dim=-1)
        s = q @ table.t()
        if self.bias is not None:
            s = s + self.bias
        if self.cfg.transitions > 0:
            s = s.scatter_add(-1, self.succ_idx[items], self.transition_prior(self.succ_cnt[items]))
        return s

    # ---- training / offline --------------------------------------------------------------
    def encode(self, items: Tensor, types: Tensor, gaps: Tensor,
               state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the LSTM over [B, T] events; returns query vectors [B, T, dim] and the final state."""
        x = self.drop(self._embed(items, types, gaps))
        if state is None:
            state = self.init_state(items.shape[0])
        out, (h, c) = self.lstm(x, state)
        return self.query(out, items), (h, c)

    def forward(self, items: Tensor, types: Tensor, gaps: Tensor,
                state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        q, state = self.encode(items, types, gaps, state)
        return self.score(q, items), state

    # ---- serving: one event per row ------------------------------------------------------
    def step(self, item: Tensor, etype: Tensor, gap: Tensor, h: Tensor, c: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One event for each of B users: item/etype/gap [B] int64, h/c [L, B, H].

        Returns (new h, new c, scores [B, n_items]). Explicit gate arithmetic with the
        weights of ``self.lstm`` (PyTorch gate order i, f, g, o), so it exports to plain ONNX.
        """
        x = self._embed(item, etype, gap)
        hs, cs = [], []
        for layer in range(self.cfg.layers):
            w_ih = getattr(self.lstm, f"weight_ih_l{layer}")
            w_hh = getattr(self.lstm, f"weight_hh_l{layer}")
            b = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
            gates = x @ w_ih.t() + h[layer] @ w_hh.t() + b
            i, f, g, o = gates.chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            hs.append(h_new)
            cs.append(c_new)
            x = h_new
        h_out, c_out = torch.stack(hs), torch.stack(cs)
        return h_out, c_out, self.score(self.query(x, item), item)
