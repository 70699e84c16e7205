"""The `parley` command: the one place where implementations are chosen."""
