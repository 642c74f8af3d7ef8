"""The WKV-7 recurrence in a form autograd can train quickly, plus the plain loop it must equal.

The recurrence (rwkv7-engine.md §2.2 step 9), per head, with the state S stored
[value][key]:

    S_t = S_{t-1} · diag(w_t) + (S_{t-1} a_t) b_tᵀ + v_t k_tᵀ,      y_t = S_t r_t

Run token by token under autograd it records T tiny operations per layer, which is far too
slow to train with. The chunked form below handles L tokens at once with matrix products.
Inside a chunk, divide the state by the cumulative decay D_t = Π_{s≤t} w_s (Ŝ_t = S_t / D_t);
then Ŝ_t is just Ŝ_0 plus rank-one terms, and the "removal" vectors sa_t = S_{t-1} a_t solve a
unit lower-triangular system:

    (I − tril(Ã B̃ᵀ, −1)) SA = Ã S_0ᵀ + tril(Ã K̃ᵀ, −1) V
    Y = R̃ S_0ᵀ + tril(R̃ B̃ᵀ) SA + tril(R̃ K̃ᵀ) V
    S_L = S_0 diag(D_L) + SAᵀ (B ⊙ D_L/D) + Vᵀ (K ⊙ D_L/D)

with Ã = a ⊙ D_{t−1}, B̃ = b / D_t, K̃ = k / D_t, R̃ = r ⊙ D_t. Everything that does not depend on
S_0 is computed for all chunks at once; the only sequential part is S ← S·A_c + C_c, one small
matrix product per chunk. Each pairwise product a·b·D_{t−1}/D_s is bounded by |a||b| because
decays are < 1, and with chunks of 16 the scale factors stay within fp32's comfortable range
(decay ≥ e^−0.61 per step, so 1/D ≤ e^9.7).
"""

from __future__ import annotations

import torch

#: Tokens per chunk. 16 keeps exp(−cumulative log-decay) ≤ e^9.7 in fp32.
DEFAULT_CHUNK = 16


def wkv_sequential(
    r: torch.Tensor, log_w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token reference. Inputs (B, T, H, N); state (B, H, N, N) [value][key].

    Returns y (B, T, H, N) and the final state.
    """
    batch, steps, heads, size = r.shape
    s = state if state is not None else r.new_zeros(batch, heads, size, size)
    w = torch.exp(log_w)
    out = []
    for t in range(steps):
        sa = torch.einsum("bhij,bhj->bhi", s, a[:, t])
        s = s * w[:, t, :, None, :] + sa[..., None] * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        out.append(torch.einsum("bhij,bhj->bhi", s, r[:, t]))
    return torch.stack(out, dim=1), s


def wkv_chunked(
    r: torch.Tensor, log_w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, state: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`wkv_sequential`, computed chunk-parallel. Inputs (B, T, H, N).

    ``log_w`` is the natural log of the decay (≤ 0). T need not be a multiple of ``chunk``:
    the tail is padded with identity steps (w = 1, k = v = a = b = 0), which leave S unchanged.
    """
    batch, steps, heads, size = r.shape
    pad = (-steps) % chunk
    if pad:
        def padded(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
        r, log_w, k, v, a, b = (padded(x) for x in (r, log_w, k, v, a, b))
    n_chunks = (steps + pad) // chunk

    def chunks(x: torch.Tensor) -> torch.Tensor:
        # (B, T, H, N) -> (B, H, n_chunks, L, N), contiguous so the batched products need no copies
        return x.view(batch, n_chunks, chunk, heads, size).permute(0, 3, 1, 2, 4).contiguous()

    r, log_w, k, v, a, b = (chunks(x) for x in (r, log_w, k, v, a, b))
    cum = torch.cumsum(log_w, dim=3)            # log D_t (inclusive)
    cum_prev = cum - log_w                      # log D_{t-1}
    total = cum[:, :, :, -1:, :]                # log D_L
    a_t = a * torch.exp(cum_prev)
    b_t = b * torch.exp(-cum)
    k_t = k * torch.exp(-cum)
    r_t = r * torch.exp(cum)
    to_end = torch.exp(total - cum)             # D_L / D_t ≤ 1
    b_end = b * to_end
    k_end = k * to_end

    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=r.device).tril(-1)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=r.device).tril(0)
    zero = r.new_zeros(())
    m_ab = torch.where(strict, a_t @ b_t.transpose(-1, -2), zero)
    m_ak = torch.where(strict, a_t @ k_t.transpose(-1, -2), zero)
    m_rb = torch.where(causal, r_t @ b_t.transpose(-1, -2), zero)
    m_rk = torch.where(causal, r_t @ k_t.transpose(-1, -2), zero)

    # SA = W S_0ᵀ + U with W = T⁻¹ Ã, U = T⁻¹ M_ak V, T = I − M_ab (unit lower triangular).
    t_inv = _unit_lower_inverse(m_ab)
    w_mat = t_inv @ a_t
    u_mat = t_inv @ (m_ak @ v)

    # Chunk transition: S_next = S_0 A_c + C_c.
    trans = w_mat.transpose(-1, -2) @ b_end
    trans = trans + torch.diag_embed(torch.exp(total.squeeze(3)))
    const = u_mat.transpose(-1, -2) @ b_end + v.transpose(-1, -2) @ k_end

    s = state if state is not None else r.new_zeros(batch, heads, size, size)
    starts = []
    # unbind, not indexing: the backward of n index ops would scatter into n full-size zero tensors
    for trans_c, const_c in zip(trans.unbind(2), const.unbind(2)):
        starts.append(s)
        s = torch.baddbmm(const_c.flatten(0, 1), s.flatten(0, 1), trans_c.flatten(0, 1)).view_as(s)
    s0 = torch.stack(starts, dim=2)             # (B, H, n_chunks, Nv, Nk)

    y = (r_t + m_rb @ w_mat) @ s0.transpose(-1, -2) + m_rb @ u_mat + m_rk @ v
    y = _ContiguousGrad.apply(y)
    y = y.permute(0, 2, 3, 1, 4).reshape(batch, n_chunks * chunk, heads, size)
    return y[:, :steps], s


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    The output permute hands back a gradient with per-chunk strides that CPU batched matrix
    products cannot use directly; they would fall back to one small copy per matrix (slow).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad.contiguous()


def _unit_lower_inverse(m: torch.Tensor) -> torch.Tensor:
    """(I − M)⁻¹ for strictly lower-triangular M (so M^L = 0), as (I+M)(I+M²)(I+M⁴)….

    A handful of small batched matrix products: much faster on the CPU than a batched
    triangular solve, and exact up to rounding because the series terminates.
    """
    size = m.shape[-1]
    eye = torch.eye(size, dtype=m.dtype, device=m.device)
    result = eye + m
    power = m
    span = 2
    while span < size:
        power = power @ power
        result = result @ (eye + power)
        span *= 2
    return result
