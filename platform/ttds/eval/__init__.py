"""Evaluation: ranking metrics over full-catalogue rankings (HR@K, NDCG@K)."""

from ttds.eval.metrics import DEFAULT_KS, MetricAccumulator, check_user_count, per_user_ranks, ranking_metrics

__all__ = ["DEFAULT_KS", "MetricAccumulator", "check_user_count", "per_user_ranks", "ranking_metrics"]
