"""Live detection: an HTTP scoring service (`deepids serve`) and a stream follower (`deepids stream`).

Both are consumers of scores built on the detector interface only (`score_chunk`,
`new_history`, `threshold_`, `feature_names_`): any trained deepids model slots in. Every
record that arrives leaves either scored or rejected with a reason, and the counts add up.
"""

from deepids.serving.scorer import LiveScorer, ScoredBatch

__all__ = ["LiveScorer", "ScoredBatch"]
