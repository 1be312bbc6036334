"""trianflow.evaluation."""
