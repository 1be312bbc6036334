"""trianflow.losses."""
