"""Model parts (importing this registers them)."""
from cellseg.models.dense_heads import Float32ProposalRPNHead

__all__ = ['Float32ProposalRPNHead']
