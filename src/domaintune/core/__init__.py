"""The run itself: option checks before anything loads (`checks`), the flow of one run (`pipeline`), the
training callbacks and time budget (`callbacks`, `budget`), loading a finished run for inference
(`inference`) and the refinement loop that re-runs a run with suggested changes (`refine`)."""
