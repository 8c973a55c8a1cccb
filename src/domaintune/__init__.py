"""DomainTune: transfer learning of pretrained causal LMs to a domain, with honest before/after evaluation."""

__version__ = "0.1.0"
