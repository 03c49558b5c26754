"""The HTTP layer: the only part of SRM that knows about HTTP."""
