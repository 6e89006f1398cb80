"""Training loop of the predictor: top-k annealing, checkpoints, resume."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vlm.checkpoints import resolve_resume_checkpoint

from .config import PredictorModelConfig, PredictorTrainingConfig
from .dataset import FixationDataset, collate
from .loss import saliency_loss
from .model import ExplainableSaliencyPredictor

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-epoch(\d+)\.pt$")


def topk_for_epoch(epoch: int, config: PredictorTrainingConfig) -> int:
    """k for 0-based ``epoch``: linear from ``topk_start`` at epoch 0 to ``topk`` at ``topk_anneal_epochs``."""
    if config.topk_anneal_epochs <= 0:
        return config.topk
    t = min(epoch / config.topk_anneal_epochs, 1.0)
    return round(config.topk_start + (config.topk - config.topk_start) * t)


def load_predictor(checkpoint: str | Path, device: str = "cpu") -> tuple[ExplainableSaliencyPredictor, dict]:
    """Rebuild a trained predictor from a checkpoint; also returns the checkpoint's metadata."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    model_config = PredictorModelConfig(**{**state["model_config"], "backbone_weights": None})
    model = ExplainableSaliencyPredictor(model_config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), {k: v for k, v in state.items() if k not in ("model", "optimizer")}


def lens_channels_from(config: PredictorModelConfig, dataset: FixationDataset) -> PredictorModelConfig:
    """``config`` with ``logit_lens_channels`` taken from ``dataset`` when left 0; a mismatch names the flags."""
    if config.logit_lens != dataset.logit_lens:
        raise ValueError(
            f"--logit_lens {config.logit_lens}: the data set was read with logit-lens features {dataset.logit_lens!r}"
        )
    if config.logit_lens == "off" or config.logit_lens_channels == dataset.logit_lens_channels:
        return config
    if config.logit_lens_channels:
        raise ValueError(
            f"--logit_lens_channels {config.logit_lens_channels}: the export's {config.logit_lens} features have "
            f"{dataset.logit_lens_channels} channels (leave it 0 to take them from the export)"
        )
    return replace(config, logit_lens_channels=dataset.logit_lens_channels)


class PredictorTrainer:
    """Trains an :class:`ExplainableSaliencyPredictor` on a :class:`FixationDataset`."""

    def __init__(
        self,
        model_config: PredictorModelConfig,
        training_config: PredictorTrainingConfig,
        train_dataset: FixationDataset,
    ):
        if training_config.topk < 1 or training_config.topk_start < training_config.topk:
            raise ValueError(
                f"need 1 <= --topk ({training_config.topk}) <= --topk_start ({training_config.topk_start})"
            )
        if training_config.num_epochs < 1 or training_config.batch_size < 1:
            raise ValueError("--num_epochs and --batch_size must be >= 1")
        model_config = lens_channels_from(model_config, train_dataset)
        self.model_config = model_config
        self.args = training_config
        self.train_dataset = train_dataset
        torch.manual_seed(training_config.seed)
        self.model = ExplainableSaliencyPredictor(model_config).to(training_config.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=training_config.learning_rate, weight_decay=training_config.weight_decay
        )
        self.epoch = 0
        self.output_dir = Path(training_config.output_dir)

    def save(self) -> Path:
        """Write ``checkpoint-epoch{N}.pt`` for the epochs finished so far (under another name, then renamed, so that
        a job killed while saving leaves no checkpoint to resume from)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"checkpoint-epoch{self.epoch}.pt"
        partial = path.with_name(f"{path.name}.partial")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "model_config": asdict(self.model_config),
                "training_config": asdict(self.args),
                "topk": topk_for_epoch(max(self.epoch - 1, 0), self.args),
            },
            partial,
        )
        os.replace(partial, path)
        return path

    def resume(self, checkpoint: str | Path) -> None:
        """Restore model, optimizer and epoch counter from a checkpoint file."""
        state = torch.load(checkpoint, map_location=self.args.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        logger.info("resumed from %s at epoch %d", checkpoint, self.epoch)

    def train(self) -> list[float]:
        """Train until ``num_epochs``; returns the mean loss of each epoch run."""
        checkpoint = resolve_resume_checkpoint(
            self.args.resume_from, self.output_dir, flag="--resume_from", pattern=_CHECKPOINT
        )
        if checkpoint is not None:
            self.resume(checkpoint)
        history = []
        for epoch in range(self.epoch, self.args.num_epochs):
            k = topk_for_epoch(epoch, self.args)
            generator = torch.Generator().manual_seed(self.args.seed + epoch)  # same order after a resume
            loader = torch.utils.data.DataLoader(
                self.train_dataset,
                batch_size=self.args.batch_size,
                shuffle=True,
                generator=generator,
                collate_fn=collate,
                num_workers=self.args.num_workers,
            )
            self.model.train()
            total, n = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.args.num_epochs} (k={k})", leave=False)
            for batch in bar:
                dev = self.args.device
                lens = None if batch["lens"] is None else batch["lens"].to(dev)
                out = self.model(
                    batch["images"].to(dev),
                    batch["masks"].to(dev),
                    batch["valid"].to(dev),
                    batch["scores"].to(dev),
                    k,
                    lens,
                )
                loss = saliency_loss(
                    out.saliency,
                    batch["density"].to(dev),
                    batch["fixations"].to(dev),
                    self.args.nss_weight,
                    self.args.kl_weight,
                    self.args.cc_weight,
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"epoch {epoch + 1}: the loss became {loss.item()}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total, n = total + loss.item(), n + 1
                bar.set_postfix(loss=f"{total / n:.4f}")
            self.epoch = epoch + 1
            history.append(total / n)
            logger.info("epoch %d: loss %.4f (k=%d)", self.epoch, total / n, k)
            if self.epoch % self.args.save_every_epochs == 0 or self.epoch == self.args.num_epochs:
                self.save()
        return history
