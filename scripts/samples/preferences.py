"""Hand-made, illustrative preference pairs on the healthcare sample questions (general knowledge, simplified;
not medical advice): the chosen answer is the sample's own; the rejected one is worse in a way a reviewer
would flag (about another condition, evasive, or repeating itself). For `objective=dpo|orpo data=preferences`
on a fresh clone; real pairs come from `scripts/make_preferences.py run_dir=<an SFT run>`."""

from healthcare import records as health_records

EVASIVE = [
    "That depends on many things, so it is hard to say anything general about it.",
    "Everyone is different. You could look it up or ask someone you know.",
    "There are many opinions about this and no simple answer.",
]


def records() -> list[dict]:
    health = health_records()
    out = []
    for i, r in enumerate(health):
        kind = i % 3
        if kind == 0:  # the answer to the same kind of question about another condition: fluent, but wrong
            other = next(h for h in health[i + 1 :] + health[:i] if h["qtype"] == r["qtype"] and h["focus"] != r["focus"])
            rejected = other["answer"]
        elif kind == 1:  # evasive: says nothing
            rejected = EVASIVE[i % len(EVASIVE)]
        else:  # the first sentence, repeated: the degenerate loop a weak model falls into
            first = r["answer"].split(". ")[0].rstrip(".") + "."
            rejected = " ".join([first] * 3)
        if rejected.strip() == r["answer"].strip():
            continue
        out.append(
            {
                "prompt": r["question"],
                "chosen": r["answer"],
                "rejected": rejected,
                "group": r["group"],
                "id": r["id"].replace("sample-health", "sample-pref"),
            }
        )
    return out
