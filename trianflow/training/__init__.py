"""trianflow.training."""
