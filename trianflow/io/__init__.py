"""File I/O helpers: atomic writes, trajectory formats."""
