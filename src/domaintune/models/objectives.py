"""What a run optimises (`objective` config group): supervised fine-tuning on references (`sft`, the default),
preference optimisation on {prompt, chosen, rejected} pairs (`dpo`, `orpo`), or, for label tasks, the choice
among the labels by likelihood (`choice`).

Each objective gives the training loss of a batch with the metrics to log, and the validation sums the
LightningModule aggregates into `val/loss` (the number early stopping and the best weights are chosen by).

Why written here rather than taken from TRL: TRL's trainers are `transformers.Trainer`s; DomainTune trains
with Lightning (its checkpoints, resume, budget, callbacks), so the losses are computed here on our own batches
and checked against TRL's on the same batch and weights (tests/models/test_objectives.py).

Reference model for DPO: the policy *as training starts*, its answer log-probabilities computed once over
the training and validation pairs before the first step (`prepare`) and carried in the batches. That needs no
second copy of the weights for any adapter (LoRA, full, freeze), and it is the right reference when training
continues an SFT adapter (`adapter.init_from`): "the same weights with the adapter disabled" would be the base
model there, not the SFT model the pairs were made from.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from domaintune.models.loss import LossOptions, example_nll, forward_loss
from domaintune.models.segments import continuation_logps
from domaintune.utils.errors import DomainTuneError, unknown_option

Sums = dict[str, torch.Tensor]
Pair = tuple[torch.Tensor, torch.Tensor]


def answer_logps(model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> Pair:
    """Summed log-probability of each row's answer tokens and how many there are (the LM head runs only at
    answer positions, as the SFT loss does)."""
    nll, count = example_nll(model, batch, opts)
    return -nll, count


@dataclass(frozen=True)
class Objective:
    """Supervised fine-tuning: the mean next-token loss over the answer tokens (the `sft` objective)."""

    name: str

    @property
    def needs_pairs(self) -> bool:
        return False

    @property
    def needs_choices(self) -> bool:
        """Batches of label records, each with every label's answer (`collate.choice_collate`)."""
        return False

    @property
    def token_nll(self) -> bool:
        """Whether val/loss is a mean next-token loss (so its exponential, the perplexity, means something)."""
        return not (self.needs_pairs or self.needs_choices)

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        loss, _ = forward_loss(model, batch, opts)
        return loss, {}

    def validation(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> Pair:
        """(sum of the validation loss, its weight): val/loss is their ratio over the validation set."""
        loss, n_tokens = forward_loss(model, batch, opts)
        return loss.float() * n_tokens, n_tokens

    def prepare(self, model: nn.Module, data: Any, opts: LossOptions) -> None:
        """Work before the first step (DPO's reference log-probabilities); nothing for SFT."""

    def describe(self) -> str:
        """In words for the report and the model card: the objective and its settings."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        return self.name + (" (" + ", ".join(f"{k} {v}" for k, v in settings.items()) + ")" if settings else "")


@dataclass(frozen=True)
class PairObjective(Objective, ABC):
    """Shared by the preference objectives: batches of pairs (collate.pair_collate: B chosen rows, then B rejected)."""

    beta: float

    def __post_init__(self) -> None:
        if not float(self.beta) > 0:
            raise DomainTuneError(f"objective.beta={self.beta} must be positive.", "Use e.g. objective.beta=0.1.")

    @property
    def needs_pairs(self) -> bool:
        return True

    @abstractmethod
    def pair_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        """Per-pair losses (B,) and per-pair metrics (B,) each."""

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        losses, metrics = self.pair_loss(model, batch, opts)
        return losses.mean(), {k: v.detach().float().mean() for k, v in metrics.items()}

    def validation(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> Pair:
        losses, _ = self.pair_loss(model, batch, opts)
        return losses.float().sum(), torch.tensor(losses.numel(), device=losses.device)

    def rewards(
        self, chosen_score: torch.Tensor, rejected_score: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
    ) -> Sums:
        """The per-pair metrics TRL logs: rewards (beta x each side's score: DPO's log-ratio to the reference,
        ORPO's average log-probability), their accuracy and margin, and the sides' log-probabilities."""
        chosen_reward, rejected_reward = self.beta * chosen_score.detach(), self.beta * rejected_score.detach()
        return {
            "rewards/chosen": chosen_reward,
            "rewards/rejected": rejected_reward,
            "rewards/accuracy": (chosen_reward > rejected_reward).float(),
            "rewards/margin": chosen_reward - rejected_reward,
            "logps/chosen": chosen.detach(),
            "logps/rejected": rejected.detach(),
        }

    @staticmethod
    def split(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = int(batch["pairs"])
        return values[:pairs], values[pairs:]


@dataclass(frozen=True)
class DPO(PairObjective):
    """Direct Preference Optimisation (Rafailov et al. 2023) against the starting policy.

    `loss_type`: sigmoid (the paper's loss), ipo (Azar et al. 2023; per-token averaged log-ratios, as TRL
    normalises it) or hinge (SLiC)."""

    loss_type: str = "sigmoid"

    LOSS_TYPES = ("sigmoid", "ipo", "hinge")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in self.LOSS_TYPES:
            raise unknown_option("DPO loss type", self.loss_type, self.LOSS_TYPES, "Set objective.loss_type to one of them.")

    def pair_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        if "ref_logps" not in batch:
            raise DomainTuneError(
                "objective=dpo got a batch without reference log-probabilities.",
                "Build the run through domaintune.core.pipeline (it computes them before training).",
            )
        logps, counts = answer_logps(model, batch, opts)
        chosen, rejected = self.split(logps, batch)
        ref_chosen, ref_rejected = self.split(batch["ref_logps"].to(logps), batch)
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        delta = chosen_ratio - rejected_ratio
        if self.loss_type == "sigmoid":
            losses = -F.logsigmoid(self.beta * delta)
        elif self.loss_type == "hinge":
            losses = torch.relu(1 - self.beta * delta)
        else:  # ipo
            n_chosen, n_rejected = self.split(counts.to(logps), batch)
            delta_avg = chosen_ratio / n_chosen.clamp(min=1) - rejected_ratio / n_rejected.clamp(min=1)
            losses = (delta_avg - 1 / (2 * self.beta)) ** 2
        return losses, self.rewards(chosen_ratio, rejected_ratio, chosen, rejected)

    def prepare(self, model: nn.Module, data: Any, opts: LossOptions) -> None:
        """Reference log-probabilities of every training and validation pair under the starting policy, stored
        on the examples (`ref_logps`: chosen, rejected) for `pair_collate` to batch."""
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for split in ("train", "validation"):
                examples = data.examples.get(split, [])
                loader = data.eval_dataloader(split, pairs=True)
                done = 0
                for batch in tqdm(loader, desc=f"DPO reference log-probs [{split}]", leave=False):
                    inputs = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
                    logps, _ = answer_logps(model, inputs, opts)
                    chosen, rejected = self.split(logps.float().cpu(), batch)
                    for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True):
                        examples[done]["ref_logps"] = (c, r)
                        done += 1
        model.train(was_training)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (Mächler 2012: two forms, switching at -ln 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@dataclass(frozen=True)
class ORPO(PairObjective):
    """Odds Ratio Preference Optimisation (Hong et al. 2024): SFT on the chosen answer minus beta x the log-sigmoid
    of the log odds ratio of chosen over rejected (per-token average log-probabilities). No reference model.

    The SFT term is the mean NLL of the chosen *answer* tokens, as in the paper and as `objective=sft` trains;
    TRL's ORPOTrainer also counts the prompt tokens in it (its comment: "computed over the full prompt and
    response"). The odds-ratio term and the logged rewards equal TRL's (tested)."""

    def pair_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        logps, counts = answer_logps(model, batch, opts)
        chosen_sum, _ = self.split(logps, batch)
        n_chosen, _ = self.split(counts.to(logps), batch)
        avg = (logps / counts.to(logps).clamp(min=1)).float()
        chosen, rejected = self.split(avg, batch)
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        ratio = F.logsigmoid(log_odds)
        nll = -chosen_sum.sum() / n_chosen.sum().clamp(min=1)  # token-weighted mean over the batch, as SFT's
        losses = nll - self.beta * ratio
        extra = {"nll_loss": nll.detach().expand_as(ratio), "log_odds_ratio": ratio.detach()}
        return losses, {**self.rewards(chosen, rejected, chosen, rejected), **extra}


@dataclass(frozen=True)
class Choice(Objective):
    """Classification by likelihood, trained as it is scored: for a label task, the cross-entropy of the reference
    label among the labels' summed answer log-probabilities (the softmax over the labels of `choice/*`'s scores),
    plus `sft_weight` x the SFT loss of the reference answer (so the model still writes the label and stops).

    Why: SFT's next-token loss raises the reference label but never asks which label the prompt supports more;
    on Check-COVID one epoch of SFT left the likeliest label at chance, and preference training against the other
    labels after it lifted it (RESULTS.md, issue 22). This objective contrasts the labels from the first step, in
    one run. Each record is one shared row (models/segments.py): the prompt once and each label's answer in its own
    segment, so a step costs about what an SFT step on the same records costs."""

    sft_weight: float = 1.0

    def __post_init__(self) -> None:
        if not float(self.sft_weight) >= 0:
            raise DomainTuneError(
                f"objective.sft_weight={self.sft_weight} must be zero or positive.", "Use e.g. objective.sft_weight=1.0."
            )

    @property
    def needs_choices(self) -> bool:
        return True

    def per_record(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        """Per record: the loss, and the metrics (its label cross-entropy, its answer's mean token NLL, whether the
        likeliest label is the reference)."""
        k = int(batch["choices"])
        logps = continuation_logps(model, batch, opts.answer_only_logits)
        scores = logps.view(-1, k)
        gold = batch["gold"]
        tokens = torch.bincount(batch["owner"], minlength=scores.numel()).view(-1, k).gather(1, gold[:, None]).squeeze(1)
        nll = -scores.gather(1, gold[:, None]).squeeze(1) / tokens.clamp(min=1)
        ce = F.cross_entropy(scores, gold, reduction="none")
        metrics = {"choice_ce": ce.detach(), "sft_loss": nll.detach(), "choice_accuracy": (scores.argmax(1) == gold).float()}
        return ce + self.sft_weight * nll, metrics

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, Sums]:
        losses, metrics = self.per_record(model, batch, opts)
        return losses.mean(), {k: v.float().mean() for k, v in metrics.items()}

    def validation(self, model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> Pair:
        losses, _ = self.per_record(model, batch, opts)
        return losses.float().sum(), torch.tensor(losses.numel(), device=losses.device)
