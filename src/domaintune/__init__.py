"""DomainTune: transfer learning of pretrained causal LMs to a domain, with honest before/after evaluation."""

import time

__version__ = "0.1.0"

# when this process imported DomainTune (the first import of a `python train.py` run, before torch, Lightning and
# transformers load): trainer.budget counts the run's own setup from here
STARTED = time.time()
