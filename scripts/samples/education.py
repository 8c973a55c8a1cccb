"""Hand-written, illustrative research abstracts (fictional methods and numbers) with one-sentence TLDRs."""

import random

PROBLEMS = [
    ("image classification with few labels", "labelled images are expensive to collect"),
    ("machine translation for low-resource languages", "parallel text is scarce for most languages"),
    ("question answering over long documents", "relevant evidence is spread across many pages"),
    ("speech recognition in noisy rooms", "background noise hides parts of the signal"),
    ("graph node classification", "neighbourhood information is noisy and incomplete"),
    ("reinforcement learning with sparse rewards", "the agent rarely observes a useful signal"),
    ("time-series forecasting", "patterns change over time and across scales"),
    ("text summarisation of scientific papers", "papers are long and use specialised vocabulary"),
    ("anomaly detection in sensor data", "anomalies are rare and varied"),
    ("continual learning", "models forget earlier tasks when trained on new ones"),
    ("molecule property prediction", "labelled molecules are few and chemical space is vast"),
    ("code generation from natural language", "programs must be both correct and executable"),
]
METHODS = [
    (
        "a contrastive pre-training objective",
        "contrastive pre-training",
        "pulls together views of the same example and pushes apart others",
    ),
    (
        "a sparse mixture-of-experts layer",
        "a sparse mixture of experts",
        "routes each input to a small set of specialised sub-networks",
    ),
    (
        "a retrieval-augmented model",
        "retrieval augmentation",
        "looks up relevant passages from an external memory before predicting",
    ),
    ("a curriculum over training examples", "a training curriculum", "orders examples from easy to hard during training"),
    ("a lightweight adapter module", "lightweight adapters", "adds a few trainable parameters to a frozen pretrained network"),
    (
        "a self-training scheme with confidence filtering",
        "confident self-training",
        "labels unlabelled data with the model's own high-confidence predictions",
    ),
    ("a hierarchical attention mechanism", "hierarchical attention", "attends first to sections and then to words within them"),
    (
        "a data augmentation policy learned by search",
        "learned data augmentation",
        "searches for transformations that improve validation accuracy",
    ),
    (
        "a regulariser based on weight importance",
        "importance-weighted regularisation",
        "protects parameters that mattered for earlier tasks",
    ),
    ("a denoising objective", "denoising training", "teaches the model to reconstruct clean inputs from corrupted ones"),
]
RESULTS = [
    ("improves accuracy by {x} points", "raises accuracy by {x} points"),
    ("reduces error by {x}%", "cuts error by {x}%"),
    ("matches the strongest baseline with {x}% of its compute", "matches strong baselines at {x}% of the compute"),
    ("improves the F1 score by {x} points", "gains {x} F1 points"),
]
BENCHMARKS = [
    "three public benchmarks",
    "two standard datasets",
    "a new benchmark we release",
    "five evaluation suites",
    "four benchmark tasks",
]


def records(n: int = 240, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        (problem, difficulty) = rng.choice(PROBLEMS)
        (method, short, mechanism) = rng.choice(METHODS)
        (result, result_short) = rng.choice(RESULTS)
        bench = rng.choice(BENCHMARKS)
        x = rng.choice([2, 3, 4, 5, 7, 9, 12, 15, 20, 30, 40])
        key = (problem, method, result, bench)
        if key in seen:
            continue
        seen.add(key)
        result, result_short = result.format(x=x), result_short.format(x=x)
        document = (
            f"We study {problem}. This is hard because {difficulty}, and existing methods degrade when that happens. "
            f"We propose {method}, which {mechanism}. The approach is simple to implement and adds little cost at "
            f"inference time. Experiments on {bench} show that it {result} over prior work, and ablations confirm "
            f"that each component contributes."
        )
        summary = f"Applying {short} to {problem} {result_short} on {bench}."
        out.append(
            {
                "document": document,
                "summary": summary,
                "references": [summary],
                "title": f"{short.capitalize()} for {problem}",
                "group": f"{short} for {problem}",  # one paper (method x problem), one split
                "id": f"sample-education-{len(out):03d}",
            }
        )
    return out
