"""trianflow.models."""
