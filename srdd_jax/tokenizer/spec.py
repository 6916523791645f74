"""The tokenizer's settings, declared once: `TokenizerSpec` (frozen, typed, validated). Every
field is part of what the trained weights mean (kind ``identity``, see `transformer.spec`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """VAR's released tokenizer (vae_ch160v4096z32) by default."""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    using_sa: bool = True
    using_mid_sa: bool = True
    in_channels: int = 3

    @property
    def downsampling(self) -> int:
        """Image pixels per latent pixel along a side."""
        return 2 ** (len(self.ch_mult) - 1)

    def validate(self) -> None:
        """ValueError naming the first bad field and how to fix it."""
        if self.ch % 32:
            raise ValueError(f"model.tokenizer.ch={self.ch} must be a multiple of 32 (GroupNorm "
                             "groups)")
        if not 0 < abs(self.quant_resi) <= 1:
            raise ValueError(f"model.tokenizer.quant_resi={self.quant_resi} must be in (0, 1]")
        if self.share_quant_resi < 0:
            raise ValueError("model.tokenizer.share_quant_resi must be >= 0 (0 = one Phi per scale)")
        if (len(self.ch_mult) < 1 or self.num_res_blocks < 1 or self.vocab_size < 2
                or self.z_channels < 1):
            raise ValueError("model.tokenizer needs ch_mult non-empty, num_res_blocks >= 1, "
                             "vocab_size >= 2 and z_channels >= 1")
