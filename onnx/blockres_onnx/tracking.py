"""The entity-tracking task of TRACKING.md ("boxes"): data generator and metrics.

Pure numpy, so that any host (and the main job, which has no torch) can generate fresh
sequences from the task's parameters alone, as ``manifest.json`` records them.

Example::

    from blockres_onnx.tracking import Task, generate, score
    task = Task(boxes=4, objects=8, p_move=0.45, p_shift=0.15, p_ask=0.4)
    batch = generate(task, batch=4, n=256, seed=0)
    batch.tokens.shape, batch.answers[batch.ask_mask].min()   # ((4, 256), 0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PAD, BOS, PUT, MOVE, SHIFT, ASK = 0, 1, 2, 3, 4, 5
BOX0, OBJ0 = 16, 64
VOCAB = 128  # ids used: 0..5, 16..47, 64..127


@dataclass(frozen=True)
class Task:
    """The task's parameters (TRACKING.md leaves them to the project)."""

    boxes: int = 4
    objects: int = 8
    p_move: float = 0.45
    p_shift: float = 0.15
    p_ask: float = 0.4

    def __post_init__(self):
        if not 2 <= self.boxes <= 32:
            raise ValueError(f"boxes: expected 2..32, got {self.boxes}")
        if not 1 <= self.objects <= 64:
            raise ValueError(f"objects: expected 1..64, got {self.objects}")
        if abs(self.p_move + self.p_shift + self.p_ask - 1.0) > 1e-9:
            raise ValueError("p_move + p_shift + p_ask must be 1")

    def as_dict(self):
        return asdict(self)


@dataclass
class Batch:
    tokens: np.ndarray  # int64 [B, n]
    answers: np.ndarray  # int64 [B, n]: the box index at ASK object positions, else -1
    ask_mask: np.ndarray  # bool [B, n]: positions that are scored
    hops: np.ndarray  # int64 [B, n]: SHIFTs moving the asked object since its last PUT/MOVE


def generate(task: Task, batch: int, n: int, seed=None, rng=None) -> Batch:
    """``batch`` sequences of ``n`` tokens as TRACKING.md describes them.

    Vectorized over the batch: one step adds one event to every sequence that still
    has room for it (an event that would pass n tokens ends that sequence).
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    k, o = task.boxes, task.objects
    if n < 1 + 3 * o:
        raise ValueError(f"n = {n}: a sequence needs at least 1 + 3·objects = {1 + 3 * o} tokens")
    tokens = np.zeros((batch, n), np.int64)
    answers = np.full((batch, n), -1, np.int64)
    hops = np.zeros((batch, n), np.int64)
    rows = np.arange(batch)
    tokens[:, 0] = BOS
    # PUT o b for every object, objects in random order, boxes uniform.
    order = np.argsort(rng.random((batch, o)), axis=1)
    where = rng.integers(0, k, (batch, o))  # box of object order[:, i]
    state = np.empty((batch, o), np.int64)
    state[rows[:, None], order] = where
    chain = np.zeros((batch, o), np.int64)  # SHIFTs since each object's last PUT/MOVE
    put = np.stack([np.full((batch, o), PUT), OBJ0 + order, BOX0 + where], axis=2).reshape(batch, 3 * o)
    tokens[:, 1 : 1 + 3 * o] = put
    cur = np.full(batch, 1 + 3 * o)
    live = np.ones(batch, bool)
    probs = np.array([task.p_move, task.p_shift, task.p_ask])
    while live.any():
        kind = rng.choice(3, size=batch, p=probs)
        length = np.where(kind == 2, 2, 3)
        live &= cur + length <= n
        if not live.any():
            break
        ob = rng.integers(0, o, batch)
        bx = rng.integers(0, k, batch)
        src = rng.integers(0, k, batch)
        dst = (src + rng.integers(1, k, batch)) % k  # a ≠ b, uniform
        r = rows[live]
        c = cur[live]
        kd = kind[live]
        mv = kd == 0
        sh = kd == 1
        ak = kd == 2
        # MOVE o b
        rm, cm = r[mv], c[mv]
        tokens[rm, cm] = MOVE
        tokens[rm, cm + 1] = OBJ0 + ob[rm]
        tokens[rm, cm + 2] = BOX0 + bx[rm]
        state[rm, ob[rm]] = bx[rm]
        chain[rm, ob[rm]] = 0
        # SHIFT a b: every object in box a goes to box b
        rs, cs = r[sh], c[sh]
        tokens[rs, cs] = SHIFT
        tokens[rs, cs + 1] = BOX0 + src[rs]
        tokens[rs, cs + 2] = BOX0 + dst[rs]
        moved = state[rs] == src[rs, None]
        state[rs] = np.where(moved, dst[rs, None], state[rs])
        chain[rs] += moved
        # ASK o: answered at the object token
        ra, ca = r[ak], c[ak]
        tokens[ra, ca] = ASK
        tokens[ra, ca + 1] = OBJ0 + ob[ra]
        answers[ra, ca + 1] = state[ra, ob[ra]]
        hops[ra, ca + 1] = chain[ra, ob[ra]]
        cur[live] += length[live]
    return Batch(tokens, answers, answers >= 0, hops)


def score(logits: np.ndarray, batch: Batch) -> dict:
    """Query accuracy and sequence exact match of ``logits [B, n, K]`` on ``batch``.

    Sequences without an ASK count as matched (they have nothing to get wrong).
    """
    pred = logits.argmax(-1)
    right = (pred == batch.answers) & batch.ask_mask
    asks = batch.ask_mask.sum()
    wrong_per_seq = (batch.ask_mask & ~right).sum(1)
    multi = batch.ask_mask & (batch.hops > 0)
    return {
        "query_accuracy": float(right.sum() / max(asks, 1)),
        "exact_match": float((wrong_per_seq == 0).mean()),
        "asks": int(asks),
        "multi_hop_share": float(multi.sum() / max(asks, 1)),
        "multi_hop_accuracy": float((right & multi).sum() / max(multi.sum(), 1)),
    }
