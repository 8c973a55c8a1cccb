"""Loss masking: labels are the token ids exactly on the assistant turns, -100 everywhere else."""

from __future__ import annotations

from domaintune.data.chat import ChatRenderer
from domaintune.models.loss import IGNORE

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6, of course."},
]


def trained_text(tokenizer, enc) -> list[str]:
    """Decode each contiguous run of trained tokens."""
    runs, current = [], []
    for tid, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE:
            assert label == tid, "a trained label must be the token itself"
            current.append(tid)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_labels_cover_exactly_the_assistant_turns(tokenizer) -> None:
    renderer = ChatRenderer(tokenizer, max_length=512)
    [enc] = renderer.encode_many([CONV], train_on="all")
    assert trained_text(tokenizer, enc) == ["4.<|im_end|>", "6, of course.<|im_end|>"]
    # everything else (system, user turns, role headers, the newline after each turn) is masked
    masked = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab == IGNORE]
    assert tokenizer.decode(masked).count("<|im_start|>") == 5
    assert "What is 2+2?" in tokenizer.decode(masked) and "4." not in tokenizer.decode(masked)


def test_train_on_last_masks_earlier_assistant_turns(tokenizer) -> None:
    [enc] = ChatRenderer(tokenizer, max_length=512).encode_many([CONV], train_on="last")
    assert trained_text(tokenizer, enc) == ["6, of course.<|im_end|>"]


def test_prompt_is_a_prefix_of_the_training_rendering(tokenizer) -> None:
    renderer = ChatRenderer(tokenizer, max_length=512)
    [enc] = renderer.encode_many([CONV[:3]])
    prompt = renderer.prompt_ids(CONV[:3])
    assert enc.input_ids[: len(prompt)] == prompt
    first_trained = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE)
    assert first_trained == len(prompt), "training starts exactly where generation starts"


def test_truncation_keeps_the_start_and_flags_it(tokenizer) -> None:
    renderer = ChatRenderer(tokenizer, max_length=20)
    [enc] = renderer.encode_many([CONV])
    assert enc.truncated and len(enc.input_ids) == 20 and len(enc.labels) == 20


def test_stop_tokens_include_the_end_of_turn_marker(tokenizer) -> None:
    stops = ChatRenderer(tokenizer, max_length=32).stop_token_ids()
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
