"""A random k-th order Markov chain: data whose best achievable loss is known exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarkovChain:
    """P(next | previous k symbols) over `vocab_size` symbols; contexts indexed in base V."""

    vocab_size: int
    order: int
    transitions: np.ndarray
    """(V**k, V): one row of next-symbol probabilities per context."""

    @classmethod
    def random(cls, *, vocab_size: int, order: int, concentration: float,
               seed: int) -> MarkovChain:
        """Rows drawn from a symmetric Dirichlet; low concentration gives low entropy."""
        rng = np.random.default_rng(seed)
        rows = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size**order)
        return cls(vocab_size, order, rows)

    def _next_context(self) -> np.ndarray:
        # Context c = (s_1..s_k) in base V; after emitting x it becomes (s_2..s_k, x).
        contexts = np.arange(self.vocab_size**self.order)
        return (contexts % self.vocab_size ** (self.order - 1))[:, None] * self.vocab_size + \
            np.arange(self.vocab_size)[None, :]

    def stationary(self, iterations: int = 10_000, tol: float = 1e-13) -> np.ndarray:
        """Stationary distribution over contexts, by power iteration."""
        n = self.vocab_size**self.order
        nxt = self._next_context()
        pi = np.full(n, 1.0 / n)
        for _ in range(iterations):
            new = np.zeros(n)
            np.add.at(new, nxt.ravel(), (pi[:, None] * self.transitions).ravel())
            if np.abs(new - pi).max() < tol:
                return new
            pi = new
        return pi

    def entropy_rate(self) -> float:
        """H = Σ_c π(c) · H(P(·|c)) in nats: the loss floor of a perfect model."""
        p = self.transitions
        row_entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        return float(self.stationary() @ row_entropy)

    def sample(self, num_tokens: int, *, seed: int, num_chains: int = 1024) -> np.ndarray:
        """`num_tokens` symbols (uint16): `num_chains` independent paths, each started from the
        stationary distribution, run side by side (vectorised) and concatenated."""
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(self.transitions, axis=1)
        cumulative[:, -1] = 1.0
        length = -(-num_tokens // num_chains)
        pi = self.stationary()
        context = rng.choice(len(pi), size=num_chains, p=pi / pi.sum())
        modulus = self.vocab_size ** (self.order - 1)
        paths = np.empty((num_chains, length), dtype=np.uint16)
        for t in range(length):
            u = rng.random(num_chains)[:, None]
            x = (cumulative[context] < u).sum(axis=1)
            paths[:, t] = x
            context = (context % modulus) * self.vocab_size + x
        return paths.reshape(-1)[:num_tokens]
