"""Everything written for people after scoring: the report and metrics files (`report`, `publish`), the
refinement report (`analysis`), the model card, run-vs-run comparisons (`compare`) and the sweep report.
Scoring itself (metrics, evidence, generation, the evaluator) lives in `domaintune.evaluation`."""
