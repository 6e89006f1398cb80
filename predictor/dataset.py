"""Torch dataset joining fixation records with exported proposals, and its collate function."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data_tools.images import open_displayed

from .config import PredictorDataConfig
from .fixations import FixationRecord, density_map, fixation_map, load_map_png, read_fixations
from .proposals import ExportRecord, read_export

logger = logging.getLogger(__name__)

# Images are normalised with the ImageNet statistics torchvision's pretrained ResNets expect.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class FixationDataset(torch.utils.data.Dataset):
    """One item per fixation record: the resized image, its proposals and its fixation targets.

    Each record's ``key`` must be an ``image_id`` of ``export`` (when given), with the same image size.
    Proposals are ordered by exported score (highest first) and at most ``max_proposals`` are kept.
    Training targets are built at ``image_size``; the item also carries the fixations and density map
    at the original image size, on which evaluation is done.
    """

    def __init__(
        self,
        records: Sequence[FixationRecord],
        export: dict[str, ExportRecord] | None,
        image_size: int,
        max_proposals: int = 20,
        blur_sigma: float = 0.03,
    ):
        if not records:
            raise ValueError("FixationDataset: no fixation records")
        if image_size < 8:
            raise ValueError(f"--image_size must be >= 8, got {image_size}")
        if max_proposals < 1:
            raise ValueError(f"--max_proposals must be >= 1, got {max_proposals}")
        if export is not None:
            missing = [r.key for r in records if r.key not in export]
            if missing:
                raise ValueError(
                    f"{len(missing)} fixation records have no exported proposals (no image_id {missing[0]!r}"
                    f"{' and others' if len(missing) > 1 else ''} in the proposals JSONL)"
                )
            for r in records:
                e = export[r.key]
                if (e.width, e.height) != (r.width, r.height):
                    raise ValueError(
                        f"image_id {r.key!r}: exported size {e.width}x{e.height} != fixation data size "
                        f"{r.width}x{r.height}"
                    )
            over = [r.key for r in records if len(export[r.key].proposals) > max_proposals]
            if over:
                logger.warning(
                    "%d images have more than --max_proposals %d proposals (e.g. %r); the lowest-scored are not used",
                    len(over),
                    max_proposals,
                    over[0],
                )
        self.records = list(records)
        self.export = export
        self.image_size = image_size
        self.max_proposals = max_proposals
        self.blur_sigma = blur_sigma

    def __len__(self) -> int:
        return len(self.records)

    def proposal_order(self, index: int) -> list[int]:
        """Indices into the export record's proposals that the item uses, in item order."""
        if self.export is None:
            return []
        props = self.export[self.records[index].key].proposals
        return sorted(range(len(props)), key=lambda j: -props[j].score)[: self.max_proposals]

    def sigma_px(self, record: FixationRecord) -> float:
        return self.blur_sigma * max(record.width, record.height)

    def full_density(self, index: int) -> np.ndarray:
        """Ground-truth density map at the original image size (a PNG map when given, else blurred fixations)."""
        r = self.records[index]
        if r.map_path is not None:
            return load_map_png(r.map_path, r.height, r.width)
        return density_map(r.points, r.height, r.width, self.sigma_px(r))

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        s = self.image_size
        if not r.image_path.is_file():
            raise FileNotFoundError(f"record {r.key!r}: image {r.image_path} does not exist")
        im, _ = open_displayed(r.image_path)  # as displayed, as the fixations were recorded
        if im.size != (r.width, r.height):
            raise ValueError(f"record {r.key!r}: image {r.image_path} is {im.size}, expected {r.width}x{r.height}")
        image = torch.from_numpy(np.asarray(im.convert("RGB").resize((s, s), Image.BILINEAR), dtype=np.float32))
        image = (image.permute(2, 0, 1) / 255.0 - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[
            :, None, None
        ]
        order = self.proposal_order(index)
        masks = torch.zeros((len(order), s, s))
        scores = torch.zeros(len(order))
        if order:
            e = self.export[r.key]
            full = torch.from_numpy(np.stack([e.load_mask(j) for j in order])).float()
            masks = F.interpolate(full[:, None], size=(s, s), mode="area")[:, 0]
            scores = torch.tensor([e.proposals[j].score for j in order], dtype=torch.float32)
        scaled = r.points * np.array([s / r.width, s / r.height])
        if r.map_path is not None:
            full_map = torch.from_numpy(self.full_density(index)).float()
            density = F.interpolate(full_map[None, None], size=(s, s), mode="area")[0, 0]
        else:
            density = torch.from_numpy(density_map(scaled, s, s, self.blur_sigma * s)).float()
        return {
            "key": r.key,
            "index": index,
            "image": image,
            "masks": masks,
            "scores": scores,
            "fixations": torch.from_numpy(fixation_map(scaled, s, s)).float(),
            "density": density,
        }


def collate(items: list[dict]) -> dict:
    """Stack items, padding proposals to the batch's largest count (``valid`` marks real ones)."""
    p = max(it["masks"].shape[0] for it in items)
    b, s = len(items), items[0]["image"].shape[-1]
    masks = torch.zeros((b, p, s, s))
    scores = torch.zeros((b, p))
    valid = torch.zeros((b, p), dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["masks"].shape[0]
        masks[i, :n], scores[i, :n], valid[i, :n] = it["masks"], it["scores"], True
    return {
        "keys": [it["key"] for it in items],
        "indices": [it["index"] for it in items],
        "images": torch.stack([it["image"] for it in items]),
        "masks": masks,
        "scores": scores,
        "valid": valid,
        "fixations": torch.stack([it["fixations"] for it in items]),
        "density": torch.stack([it["density"] for it in items]),
    }


def build_dataset(data_config: PredictorDataConfig, split: str, use_proposals: bool = True) -> FixationDataset:
    """Read the ``split`` ("train" or "eval") fixations and proposals named in ``data_config``."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    fixations = getattr(data_config, f"{split}_fixations")
    proposals = getattr(data_config, f"{split}_proposals")
    if fixations is None or data_config.images_dir is None:
        raise ValueError(f"--{split}_fixations and --images_dir are required")
    if use_proposals and proposals is None:
        raise ValueError(f"--{split}_proposals is required unless --use_proposals false")
    records = read_fixations(
        data_config.fixation_format,
        fixations,
        data_config.images_dir,
        data_config.on_out_of_bounds,
        data_config.fixation_maps_dir,
    )
    export = read_export(proposals) if use_proposals else None
    return FixationDataset(records, export, data_config.image_size, data_config.max_proposals, data_config.blur_sigma)
