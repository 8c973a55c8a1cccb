"""Metrics on hand-checked examples, lm-eval's multiple-choice definitions, the evaluator and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from domaintune.evaluation import metrics, multiple_choice
from domaintune.evaluation.multiple_choice import MCItem
from domaintune.models.loading import load_model, materialize, model_identity
from domaintune.models.loss import LossOptions
from domaintune.reporting.report import compare
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import ROOT, require

LOSS = LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True)


# ------------------------------------------------------------------------------------------ metrics
def scores(name: str, preds: list[str], refs: list[list[str]], labels: list[str] | None = None) -> dict[str, float]:
    """A metric's plain values (the aggregate of its per-example evidence)."""
    return metrics.values(metrics.score([name], preds, refs, labels))


def test_rouge_by_hand() -> None:
    # pred "the cat sat" vs ref "the cat sat down": unigram P=3/3, R=3/4 -> F=6/7; bigram P=2/2, R=2/3 -> F=0.8
    s = scores("rouge", ["the cat sat"], [["the cat sat down"]])
    assert (
        s["rouge1"] == pytest.approx(100 * 6 / 7)
        and s["rouge2"] == pytest.approx(80.0)
        and s["rougeL"] == pytest.approx(100 * 6 / 7)
    )
    # multi-reference: the best reference counts
    assert scores("rouge", ["a dog"], [["the cat", "a dog"]])["rouge1"] == pytest.approx(100.0)


def test_squad_f1_and_exact_match_by_hand() -> None:
    # SQuAD normalisation drops case, punctuation and articles: "The Cat sat!" == "cat sat" exactly
    s = scores("squad", ["The Cat sat!", "blue"], [["cat sat"], ["a red car", "blue sky"]])
    # second: best of F1("blue","red car")=0 and F1("blue","blue sky")=2*(1*0.5)/(1.5)=2/3
    assert s["exact_match"] == pytest.approx(50.0)
    assert s["token_f1"] == pytest.approx((100 + 100 * 2 / 3) / 2)


def test_bleu_chrf_identity_and_length() -> None:
    refs = [["the quick brown fox jumps over the lazy dog"]]
    assert scores("bleu", [refs[0][0]], refs)["bleu"] == pytest.approx(100.0)
    assert scores("chrf", [refs[0][0]], refs)["chrf"] == pytest.approx(100.0)
    assert scores("length", ["a b", "c d e f"], [["x y z"], ["x"]]) == {"length_words": 3.0, "length_ratio": 1.5}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("False. The evidence contradicts it.", "false"),
        ("The claim is TRUE", "true"),
        ("Not enough info to decide", "not_enough_info"),
        ("not_enough_info", "not_enough_info"),
        ("I cannot say.", None),
        ("untrue", None),
    ],
)
def test_parse_label(text: str, expected: str | None) -> None:
    assert metrics.parse_label(text, ["true", "false", "not_enough_info"]) == expected


def test_label_accuracy_macro_f1_and_unparseable_by_hand() -> None:
    labels = ["true", "false"]
    s = scores("label", ["true", "false", "gibberish", "true"], [["true"], ["true"], ["false"], ["false"]], labels)
    # correct: 1 of 4. true: TP=1 FP=1 FN=1 -> F1=0.5; false: TP=0 -> F1=0; macro=25
    assert s == {"accuracy": 25.0, "macro_f1": pytest.approx(25.0), "unparseable_rate": 25.0}


def test_unknown_metric_name(make_cfg, tokenizer) -> None:
    cfg = make_cfg("eval.metrics=[rouge,bertscore]")
    with pytest.raises(DomainTuneError, match="Unknown metric 'bertscore'"):
        build(cfg.eval, data=build(cfg.data, tokenizer=tokenizer), loss=LOSS)


def test_report_directions() -> None:
    rows = compare(
        {"loss": 2.0, "gen/rougeL": 10.0, "gen/length_words": 5.0, "gen/unparseable_rate": 10.0},
        {"loss": 1.0, "gen/rougeL": 8.0, "gen/length_words": 9.0, "gen/unparseable_rate": 0.0},
    )
    assert rows["loss"]["improved"] is True and rows["gen/rougeL"]["improved"] is False
    assert rows["gen/length_words"]["improved"] is None and rows["gen/unparseable_rate"]["improved"] is True
    assert rows["loss"]["relative_change"] == pytest.approx(-0.5)


# ------------------------------------------------------------------------------------------ multiple choice
def test_acc_and_acc_norm_definitions_by_hand() -> None:
    items = [MCItem("q", ["ab", "abcdef"], 1, "x"), MCItem("q", ["abc", "a"], 0, "y")]
    lls = [[-2.0, -3.0], [-3.0, -1.5]]
    # item 1: acc picks 0 (wrong); per character -1.0 vs -0.5 -> acc_norm picks 1 (right)
    # item 2: acc picks 1 (wrong); per character -1.0 vs -1.5 -> acc_norm picks 0 (right)
    assert metrics.values(multiple_choice.score(items, lls)) == {"acc": 0.0, "acc_norm": 100.0, "acc_bytes": 100.0}
    # bytes differ from characters for non-ASCII text: "éé" is 2 characters but 4 bytes
    # per character -1.1 vs -1.033 picks "abc" (right); per byte -0.55 vs -1.033 picks "éé" (wrong)
    items = [MCItem("q", ["éé", "abc"], 1, "z")]
    assert metrics.values(multiple_choice.score(items, [[-2.2, -3.1]])) == {"acc": 0.0, "acc_norm": 100.0, "acc_bytes": 0.0}


def test_encode_pair_moves_trailing_space_to_the_continuation(tokenizer) -> None:
    ctx, cont = multiple_choice.encode_pair(tokenizer, "Question: x\nAnswer: ", "yes")
    assert tokenizer.decode(cont) == " yes" and tokenizer.decode(ctx) == "Question: x\nAnswer:"


def test_answer_index_out_of_range(tmp_path: Path) -> None:
    (tmp_path / "validation.jsonl").write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer_index": 2}) + "\n")
    with pytest.raises(DomainTuneError, match=r"validation.jsonl:1: answer_index=2 is out of range for 2 choices"):
        multiple_choice.load_items(tmp_path, "validation")


def test_malformed_benchmark_line_and_bad_prompt(tmp_path: Path, tokenizer) -> None:
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer_index": 0})
    (tmp_path / "validation.jsonl").write_text(good + "\n" + '{"question": "cut off' + "\n")
    with pytest.raises(DomainTuneError, match=r"validation.jsonl:2: malformed JSON.*starts with"):
        multiple_choice.load_items(tmp_path, "validation")
    item = multiple_choice.MCItem("q", ["a", "b"], 0, "x:1")
    with pytest.raises(DomainTuneError, match=r"The piqa benchmark prompt is not a valid Jinja template"):
        multiple_choice.evaluate(None, tokenizer, [item], "{{ question ", " ", 8, True, True, name="piqa")  # type: ignore[arg-type]


def test_mc_scores_match_the_lm_eval_package(make_cfg, tmp_path: Path) -> None:
    """Same model, same items: our log-likelihoods, acc and acc_norm equal lm-evaluation-harness's."""
    lm_eval = require("lm_eval", "the dev extra: pip install -e '.[dev]'")
    from lm_eval.tasks import TaskManager

    cfg = make_cfg()
    bench = ROOT / "src/domaintune/data/samples/benchmark_piqa"
    (tmp_path / "dt_mc.yaml").write_text(
        "task: dt_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {bench / 'validation.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: answer_index\ndoc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={materialize(cfg.model)},dtype=float32",
        tasks=["dt_mc"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        batch_size=8,
        device="cpu",
        log_samples=True,
    )
    model, tok = load_model(cfg.model)
    items = multiple_choice.load_items(bench, "validation")
    ours = metrics.values(multiple_choice.evaluate(model, tok, items, cfg.eval.benchmarks.piqa.prompt, " ", 8, True, True))
    assert ours["acc"] == pytest.approx(100 * theirs["results"]["dt_mc"]["acc,none"])
    assert ours["acc_norm"] == pytest.approx(100 * theirs["results"]["dt_mc"]["acc_norm,none"])
    pairs = [multiple_choice.encode_pair(tok, f"Question: {it.question}\nAnswer:", " " + c) for it in items for c in it.choices]
    our_lls = multiple_choice.loglikelihoods(model, tok, pairs, 8, True, True)
    their_lls = [ll for s in sorted(theirs["samples"]["dt_mc"], key=lambda s: s["doc_id"]) for ll, _ in s["filtered_resps"]]
    assert our_lls == pytest.approx(their_lls, abs=1e-3)


# ------------------------------------------------------------------------------------------ evaluator
def test_evaluator_scores_generations_and_caches_the_base(make_cfg, tokenizer, tmp_path: Path) -> None:
    cfg = make_cfg("data=fact_checking", "eval.general=piqa", "eval.generation.max_samples=6")
    dm = build(cfg.data, tokenizer=tokenizer)
    model, _ = load_model(cfg.model)
    evaluator = build(cfg.eval, data=dm, loss=LOSS, model_key=model_identity(cfg.model))
    first = evaluator.run(model, "base")
    assert {
        "loss",
        "perplexity",
        "gen/accuracy",
        "gen/macro_f1",
        "gen/unparseable_rate",
        "mc/piqa/acc",
        "mc/piqa/acc_norm",
    } <= set(first.metrics)
    assert len(first.samples) == 6
    # every quality metric keeps its per-example evidence, whose aggregate is the reported value
    for name in ("loss", "perplexity", "gen/accuracy", "gen/macro_f1", "mc/piqa/acc"):
        assert first.evidence_of(name).value() == pytest.approx(first.metrics[name]), name
    assert first.evidence_of("gen/accuracy").n == 6 and first.evidence_of("loss").n == 8
    assert first.evidence_of("gen/accuracy").ids == [s["id"] for s in first.samples]
    assert "eval_tokens_per_s" not in first.evidence, "speeds are not resampled"
    assert evaluator.cache_path().exists()
    again = build(cfg.eval, data=dm, loss=LOSS, model_key=model_identity(cfg.model)).run(None, "base")  # type: ignore[arg-type]
    assert again.metrics == first.metrics, "the second base evaluation comes from the cache (no model needed)"
    assert again.evidence == first.evidence, "and so does its evidence (the tuned run pairs with it)"


def test_empty_eval_split_is_an_error(make_cfg, tokenizer, tmp_path: Path) -> None:
    cfg = make_cfg("eval.split=test", "eval.max_samples=0")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    dm.examples["test"] = []
    model, _ = load_model(cfg.model)
    with pytest.raises(DomainTuneError, match="test split has no examples"):
        build(cfg.eval, data=dm, loss=LOSS).loss(model, "base", "test")


def test_missing_eval_split_is_an_error(make_cfg, tokenizer, tmp_path: Path) -> None:
    from tests.conftest import qa_rows, write_jsonl

    write_jsonl(tmp_path / "d" / "train.jsonl", qa_rows(5))
    write_jsonl(tmp_path / "d" / "validation.jsonl", qa_rows(7)[5:])
    cfg = make_cfg("data=custom", f"data.dir={tmp_path}/d", "eval.split=test")
    with pytest.raises(DomainTuneError, match="no 'test' split"):
        build(cfg.eval, data=build(cfg.data, tokenizer=tokenizer), loss=LOSS).run(load_model(cfg.model)[0], "base")


@pytest.mark.parametrize("boolean_mask", [True, False], ids=["bool-mask", "positions"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_mc_shared_context_and_answer_only_logits_keep_the_log_likelihoods(
    make_cfg, monkeypatch, attention: str, boolean_mask: bool
) -> None:
    """Every fast path (context once per question, head at continuation positions only, by boolean mask or
    by the positions fallback) equals the plain one-row-per-choice computation that lm-eval does."""
    from domaintune.models import loss as module

    monkeypatch.setattr(module, "BOOLEAN_LOGITS_TO_KEEP", boolean_mask)
    cfg = make_cfg(f"model.attn_implementation={attention}")
    model, tok = load_model(cfg.model)
    items = multiple_choice.load_items(ROOT / "src/domaintune/data/samples/benchmark_piqa", "validation")
    pairs = [multiple_choice.encode_pair(tok, f"Question: {it.question}\nAnswer:", " " + c) for it in items for c in it.choices]
    pairs.append(multiple_choice.encode_pair(tok, "Question: one token?\nAnswer:", " a"))  # a one-token choice
    plain = multiple_choice.loglikelihoods(model, tok, pairs, 4, share_context=False, answer_only_logits=False)
    for share, answer_only in ((True, True), (True, False), (False, True)):
        got = multiple_choice.loglikelihoods(model, tok, pairs, 4, share_context=share, answer_only_logits=answer_only)
        assert got == pytest.approx(plain, abs=1e-4, rel=1e-5), (share, answer_only)
    assert len({tuple(c) for c, _ in pairs}) < len(pairs), "the items must share contexts for this test to mean anything"


def test_fast_generation_gives_the_same_answers_and_keeps_the_weights(make_cfg, tokenizer) -> None:
    """Merged LoRA + length-sorted batches generate exactly what the plain path generates, in input order,
    and leave every weight bit-identical (training may continue after an evaluation)."""
    from domaintune.data.chat import ChatRenderer
    from domaintune.evaluation.generation import generate
    from domaintune.models.adapters import apply_adapter, peft_config

    cfg = make_cfg("eval.generation.max_new_tokens=6")
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a non-zero adapter, so merging changes the weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    convs = [dm.conversation(r) for r in dm.records["validation"][:7]]
    renderer = ChatRenderer(tokenizer, 384)
    plain_cfg = {**cfg.eval.generation, "sort_by_length": False, "batch_size": 1}
    plain, _ = generate(model, tokenizer, renderer, convs, plain_cfg, merge_adapter=False)
    fast, _ = generate(model, tokenizer, renderer, convs, {**cfg.eval.generation, "batch_size": 3}, merge_adapter=True)
    assert [g.text for g in fast] == [g.text for g in plain]
    assert any(g.n_tokens for g in plain)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    layers = [m for m in model.modules() if hasattr(m, "merged_adapters")]
    assert len(layers) == 14 and not any(m.merged for m in layers), "every LoRA layer is back, unmerged (2 blocks x 7)"


def test_merged_evaluation_scores_like_the_unmerged_model(make_cfg, tokenizer) -> None:
    from domaintune.models.adapters import apply_adapter, peft_config

    cfg = make_cfg("eval.generation.max_samples=4", "eval.generation.max_new_tokens=5")
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = build(cfg.data, tokenizer=tokenizer)
    results = {}
    for merge in (False, True):
        with open_dict(cfg):
            cfg.eval.merge_adapter = merge
        results[merge] = build(cfg.eval, data=dm, loss=LOSS).run(model, "tuned")
    assert results[True].metrics["loss"] == pytest.approx(results[False].metrics["loss"], abs=1e-5)
    assert [s["output"] for s in results[True].samples] == [s["output"] for s in results[False].samples]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_base_cache_tells_tasks_apart_whose_prompts_tokenise_alike(make_cfg, tokenizer) -> None:
    """The shipped preference pairs ask the healthcare sample questions with the same system prompt: the test
    examples tokenise identically, so only the task type and its metrics can keep their cached base results apart
    (a healthcare run once reused the pairs' base result and lost its token F1)."""
    paths = []
    for data in ("healthcare", "preferences"):
        cfg = make_cfg(f"data={data}")
        dm = build(cfg.data, tokenizer=tokenizer)
        dm.prepare()
        evaluator = build(cfg.eval, data=dm, loss=LOSS, model_key="same-model")
        paths.append(evaluator.cache_path())
    assert paths[0] != paths[1]


def test_shared_rows_are_cut_at_a_bounded_width() -> None:
    """Thousands of continuations of one context become rows of bounded width, each with the context once, every
    continuation in exactly one row; a context shorter than its continuations (CrowS-Pairs: the BOS token alone)
    is not shared at all."""
    from domaintune.evaluation.multiple_choice import MAX_SHARED_ROW, _row_length, _rows

    context = list(range(100, 130))
    pairs = [(context, list(range(2, 2 + 20))) for _ in range(3000)]
    rows = _rows(pairs, share_context=True)
    assert sorted(i for r in rows for i in r.members) == list(range(3000))
    assert all(_row_length(r, pairs) <= MAX_SHARED_ROW for r in rows) and 1 < len(rows) < 3000
    assert all(r.ctx == context for r in rows)
    short = [([1], list(range(2, 22))) for _ in range(50)]
    assert [r.members for r in _rows(short, share_context=True)] == [[i] for i in range(50)]
