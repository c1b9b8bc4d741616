from cellseg.models.dense_heads.float32_proposal_rpn_head import Float32ProposalRPNHead

__all__ = ['Float32ProposalRPNHead']
