"""trianflow.geometry."""
