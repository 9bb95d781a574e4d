"""``mix_seed``: one seed out of several integers, for independent random streams."""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / φ, SplitMix64's increment


def mix_seed(*values: int) -> int:
    r"""Hash integers into one 63-bit seed, so that nearby inputs give unrelated streams.

    Each value is xor-ed into a 64-bit state, which then takes one SplitMix64 step
    (Steele et al. 2014): :math:`s \leftarrow s + \gamma`, then
    :math:`z \leftarrow (z \oplus (z \gg 30)) \cdot m_1`, :math:`z \leftarrow (z \oplus (z \gg 27)) \cdot m_2`,
    :math:`s \leftarrow z \oplus (z \gg 31)`, all modulo :math:`2^{64}`. The result drops the low bit, so it
    fits ``torch.Generator.manual_seed``. The data modules seed training batch :math:`k` of process
    :math:`r` with ``mix_seed(seed, r, k)``.
    """
    state = _GOLDEN
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + _GOLDEN) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


__all__ = ["mix_seed"]
