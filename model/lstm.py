"""The LSTM next-item model: one config dataclass, one ``forward`` over sequences, and the
explicit one-event ``step`` that serving runs (exported to ONNX as is).

Per event the input is item embedding + event-type embedding + time-gap-bucket embedding.
The recurrent state (h, c) summarises the user's history; a first-order term (FPMC-style)
adds the current item's own embedding through a learned map, so item-to-item transitions are
scored as sharply as by a Markov chain. Scores cover the whole catalog: by default the cosine of
the query and the (tied) item embeddings times 20 (``cosine``; 0 = the dot product) plus a per-item
bias, with attention over the last 20 items and 128-d embeddings (the defaults since issue 12; a
checkpoint written before those fields existed loads with them off, ``LSTMConfig.from_dict``). Options: separate first-order in/out tables
(``first_order_dim``) and a transition-count prior over each item's top successors in the
training data, weighted by learned scalars (``transitions``); attention over the user's last N
distinct known items, the newest end of the window the serving state keeps for its seen filter
(``attention``, NARM/STAMP-style: the query is the LSTM output, keys and values the items'
embeddings; ``recent_windows`` builds the windows for training, serving passes its own); a
SASRec-style point-wise feed-forward residual block on the query (``ffn``).

``forward`` (training, fused ``nn.LSTM``) and ``step`` (serving, explicit gate arithmetic)
are the same computation: tests/model/test_lstm.py proves T steps equal one forward over T.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from streamrec.model.gaps import N_GAP_BUCKETS


@dataclass(frozen=True)
class LSTMConfig:
    n_items: int  # item vocabulary size, including PAD (0) and OOV (1)
    n_event_types: int  # event-type vocabulary size, including PAD (0) and OTHER (1)
    n_gap_buckets: int = N_GAP_BUCKETS
    dim: int = 128  # embedding size (items, event types, gaps) and scoring space (64 before issue 12)
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
    cosine: float = 20.0  # > 0: score by cosine similarity of query and output item vectors times
    # this scale (the per-item bias still adds popularity); 0: plain dot product (the default before issue 12)
    attention: int = 20  # > 0: attend over the user's last N distinct known items (current one
    # included, oldest first, PAD-padded on the left: the newest N of the serving seen window);
    # the context, mapped into the scoring space, adds to the query. ``step`` then takes the
    # window as an input. 0: off (the default before issue 12)
    ffn: int = 0  # > 0: a point-wise feed-forward residual block on the query, SASRec-style, with this
    # inner width: q = LayerNorm(q + drop(W2 drop(relu(W1 q)))) after the query's LayerNorm. 0: off
    heads: int = 1  # attention heads (attention > 0): the query, keys and values split into this many
    # equal slices of dim, each slice attending on its own; 1: one head over the whole dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "LSTMConfig":
        """A config as stored (``to_dict``), possibly by code older than some fields: a field the
        stored dict lacks takes the value that reproduces that older model (off), not today's default."""
        return cls(**{**BEFORE_FIELDS, **stored})


# what a config written before each of these fields existed meant (they were added off)
BEFORE_FIELDS = {"first_order_dim": 0, "transitions": 0, "cosine": 0.0, "attention": 0, "ffn": 0, "heads": 1}


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
        if cfg.heads < 1 or cfg.dim % cfg.heads:
            raise ValueError(f"heads must be >= 1 and divide dim={cfg.dim}, got {cfg.heads}")
        if cfg.attention > 0:
            self.att_q = nn.Linear(cfg.hidden, cfg.dim)  # LSTM output -> attention query
            self.att_pos = nn.Parameter(torch.randn(cfg.attention, cfg.dim) * 0.05)  # per window slot
            self.att_out = nn.Linear(cfg.dim, cfg.dim, bias=False)  # context -> scoring space
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
        if cfg.ffn > 0:  # created last: the other weights keep the random draws they had without it
            self.ffn_in = nn.Linear(cfg.dim, cfg.ffn)
            self.ffn_out = nn.Linear(cfg.ffn, cfg.dim)
            self.ffn_norm = nn.LayerNorm(cfg.dim)

    def init_state(self, batch: int) -> tuple[Tensor, Tensor]:
        """A new user's state: zeros, shape [layers, batch, hidden] each."""
        z = torch.zeros(self.cfg.layers, batch, self.cfg.hidden)
        return z, z.clone()

    # ---- shared pieces -------------------------------------------------------------------
    def _embed(self, items: Tensor, types: Tensor, gaps: Tensor) -> Tensor:
        return self.item_emb(items) + self.type_emb(types) + self.gap_emb(gaps)

    def attend(self, out: Tensor, window: Tensor) -> Tensor:
        """Attention context [..., dim] from the (dropped-out) LSTM output [..., hidden] over the
        items of ``window`` [..., N] (oldest first; PAD 0 and OOV 1 slots are ignored; an empty
        window gives zeros). Keys: item embedding + a learned vector per window slot; values:
        item embeddings."""
        emb = self.item_emb(window)  # [..., N, dim]
        keys = emb + self.att_pos
        if self.cfg.heads > 1:
            return self.att_out(self._attend_heads(self.att_q(out), keys, emb, window > 1, self.cfg.heads))
        a = self.att_q(out).unsqueeze(-1)  # [..., dim, 1]
        logits = (keys @ a).squeeze(-1) * (1.0 / math.sqrt(self.cfg.dim))  # [..., N]
        live = window > 1
        logits = torch.where(live, logits, torch.full_like(logits, -1e9))
        w = torch.softmax(logits, dim=-1) * live.to(logits.dtype)
        ctx = (w.unsqueeze(-2) @ self.drop(emb)).squeeze(-2)  # [..., dim]
        return self.att_out(ctx)

    def _attend_heads(self, a: Tensor, keys: Tensor, emb: Tensor, live: Tensor, heads: int) -> Tensor:
        """``attend`` with ``heads`` > 1: query a [..., dim], keys and values [..., N, dim] split into
        heads slices of dim / heads; each slice's softmax over the window on its own; the slices'
        contexts concatenated: [..., dim]."""
        d = self.cfg.dim // heads
        split = lambda x: x.reshape(*x.shape[:-1], heads, d).transpose(-2, -3)  # noqa: E731  [..., heads, N, d]
        logits = (split(keys) @ a.reshape(*a.shape[:-1], heads, d, 1)).squeeze(-1) * (1.0 / math.sqrt(d))
        live = live.unsqueeze(-2)  # [..., 1, N]
        logits = torch.where(live, logits, torch.full_like(logits, -1e9))  # [..., heads, N]
        w = torch.softmax(logits, dim=-1) * live.to(logits.dtype)
        ctx = (w.unsqueeze(-2) @ split(self.drop(emb))).squeeze(-2)  # [..., heads, d]
        return ctx.reshape(*ctx.shape[:-2], self.cfg.dim)

    def query(self, out: Tensor, items: Tensor, window: Tensor | None = None) -> Tensor:
        """Scoring-space vector from the LSTM output and the current item (any leading dims):
        [..., dim], or [..., dim + first_order_dim] with separate first-order tables. Attention
        models need the recent-items ``window`` [..., N] too."""
        o = self.drop(out)
        q = self.proj(o)
        if self.first is not None:
            q = q + self.first(self.drop(self.item_emb(items)))
        if self.cfg.attention > 0:
            if window is None:
                raise ValueError("an attention model needs the recent-items window (attention > 0)")
            q = q + self.attend(o, window)
        q = self.norm(q)
        if self.cfg.ffn > 0:
            q = self.feed_forward(q)
        if self.fo_in is not None:
            q = torch.cat([q, self.drop(self.fo_in(items))], dim=-1)
        return q

    def feed_forward(self, q: Tensor) -> Tensor:
        """The point-wise feed-forward residual block (``ffn`` > 0) on query vectors [..., dim]."""
        f = self.ffn_out(self.drop(torch.relu(self.ffn_in(q))))
        return self.ffn_norm(q + self.drop(f))

    def output_table(self) -> Tensor:
        """[n_items, query size]: the item embeddings (tied), beside the first-order out table."""
        if self.fo_out is None:
            return self.item_emb.weight
        return torch.cat([self.item_emb.weight, self.fo_out.weight], dim=1)

    def scoring_table(self) -> Tensor:
        """[n_items, query size]: the output table as ``score`` uses it: unit rows for cosine models. The
        exported graphs replace it by a precomputed constant (export/onnx_export.py ``freeze_scoring``)."""
        table = self.output_table()
        if self.cfg.cosine > 0:
            table = nn.functional.normalize(table, dim=-1)
        return table

    def scale_query(self, q: Tensor) -> Tensor:
        """The query as ``score`` multiplies it with the table: cosine models, ``cosine`` x its unit vector."""
        if self.cfg.cosine > 0:
            q = self.cfg.cosine * nn.functional.normalize(q, dim=-1)
        return q

    def set_transitions(self, succ_idx: Tensor, succ_cnt: Tensor) -> None:
        self.succ_idx.copy_(succ_idx)
        self.succ_cnt.copy_(succ_cnt)

    def transition_prior(self, cnt: Tensor) -> Tensor:
        return self.trans_w[0] * torch.log1p(cnt) + self.trans_w[1] * (cnt > 0).to(cnt.dtype)

    def score(self, q: Tensor, items: Tensor, table: Tensor | None = None) -> Tensor:
        """Whole-catalog scores [..., n_items] for query vectors [..., q] computed after the
        events ``items`` [...] (the current items feed the transition prior). ``table``: the
        ``scoring_table()`` when the caller has it already (scores in row blocks)."""
        s = self.scale_query(q) @ (self.scoring_table() if table is None else table).t()
        if self.bias is not None:
            s = s + self.bias
        if self.cfg.transitions > 0:
            s = s.scatter_add(-1, self.succ_idx[items], self.transition_prior(self.succ_cnt[items]))
        return s

    # ---- training / offline --------------------------------------------------------------
    def encode(self, items: Tensor, types: Tensor, gaps: Tensor,
               state: tuple[Tensor, Tensor] | None = None, window: Tensor | None = None,
               sel: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the LSTM over [B, T] events; returns query vectors [B, T, dim] and the final state.
        Attention models: ``window`` [B, T, N] is each position's recent-items window; without it,
        the windows are built from ``items`` alone (right for a chunk that starts at the users'
        first events, not for a later chunk). With ``sel`` (a [B, T] boolean) the query vectors
        are those of the selected positions only, [n, dim]: the query (attention, dropout) is
        computed for no other position (evaluation: the positions before its targets)."""
        x = self.drop(self._embed(items, types, gaps))
        if state is None:
            state = self.init_state(items.shape[0])
        out, (h, c) = self.lstm(x, state)
        if self.cfg.attention > 0 and window is None:
            window = recent_windows(items, self.cfg.attention)
        if sel is not None:
            out, items, window = out[sel], items[sel], None if window is None else window[sel]
        return self.query(out, items, window), (h, c)

    def forward(self, items: Tensor, types: Tensor, gaps: Tensor,
                state: tuple[Tensor, Tensor] | None = None, window: Tensor | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        q, state = self.encode(items, types, gaps, state, window)
        return self.score(q, items), state

    # ---- serving: one event per row ------------------------------------------------------
    def step(self, item: Tensor, etype: Tensor, gap: Tensor, h: Tensor, c: Tensor,
             window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One event for each of B users: item/etype/gap [B] int64, h/c [L, B, H]; attention
        models also take ``window`` [B, N] int64, the user's last N distinct known items after
        this event (the current one included, oldest first, PAD 0 on the left): the newest end of
        the state's seen window, updated with this event before the step.

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
        return h_out, c_out, self.score(self.query(x, item, window), item)


def recent_windows(items: Tensor, size: int, start: int = 0, block: int = 64) -> Tensor:
    """For each position t >= ``start`` of ``items`` [B, S] (each row a user's inputs from the first
    event), the last ``size`` distinct known items (id > 1) among positions <= t, oldest first and
    PAD-padded on the left: [B, S - start, size]. The same window the serving state keeps
    (``streams.state.remember`` over known items), computed for every position at once."""
    B, S = items.shape
    pos = torch.arange(S)
    # each position's next occurrence of the same item (S if none): it is in the window at t
    # only while that is after t
    order = torch.argsort(items * (S + 1) + pos, dim=1)
    srt = items.gather(1, order)
    nxt_sorted = torch.full_like(order, S)
    nxt_sorted[:, :-1] = torch.where(srt[:, 1:] == srt[:, :-1], order[:, 1:], torch.full_like(order[:, 1:], S))
    nxt = torch.empty_like(order).scatter_(1, order, nxt_sorted)
    known = items > 1
    out = []
    for t0 in range(start, S, block):
        t1 = min(t0 + block, S)
        t = torch.arange(t0, t1)[None, :, None]  # [1, T, 1]
        p = pos[None, None, :t1]
        live = known[:, None, :t1] & (p <= t) & (nxt[:, None, :t1] > t)  # [B, T, t1]
        k = min(size, t1)
        slot = torch.where(live, p + 1, torch.zeros_like(p)).topk(k, dim=-1).values.flip(-1)  # 0 = empty
        w = items.gather(1, (slot - 1).clamp(min=0).reshape(B, -1)).reshape(B, t1 - t0, k)
        w = torch.where(slot > 0, w, torch.zeros_like(w))
        if k < size:
            w = nn.functional.pad(w, (size - k, 0))
        out.append(w)
    if not out:
        return torch.zeros(B, 0, size, dtype=items.dtype)
    return torch.cat(out, dim=1)
