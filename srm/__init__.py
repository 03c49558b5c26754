"""SRM: the Session Resource Manager."""

__version__ = "0.1.0"
