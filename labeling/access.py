"""Who may see or do what (interim: the labeling-core branch replaces this file)."""

from .selectors import membership_require

__all__ = ["membership_require"]
