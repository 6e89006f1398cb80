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
from .proposals import LENS_FEATURES, ExportRecord, read_export

logger = logging.getLogger(__name__)

# Images are normalised with the ImageNet statistics torchvision's pretrained ResNets expect.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class FixationDataset(torch.utils.data.Dataset):
    """One item per fixation record: the resized image, its proposals and its fixation targets.

    Each record's ``key`` must be an ``image_id`` of ``export`` (when given), with the same image size.
    Proposals are ordered by exported score (highest first) and at most ``max_proposals`` are kept
    (none with ``use_proposals`` False). Training targets are built at ``image_size``; the item also
    carries the fixations and density map at the original image size, on which evaluation is done.

    ``logit_lens`` ("phrases" or "topk", "off" by default) adds the export's logit-lens features, resized
    bilinearly from the patch grid to ``image_size``: ``lens`` (P, layers, S, S) per kept proposal, or
    (k * layers, S, S) per image; ``logit_lens_channels`` is what the model takes (layers, or k * layers).
    """

    def __init__(
        self,
        records: Sequence[FixationRecord],
        export: dict[str, ExportRecord] | None,
        image_size: int,
        max_proposals: int = 20,
        blur_sigma: float = 0.03,
        logit_lens: str = "off",
        use_proposals: bool = True,
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
            over = [r.key for r in records if use_proposals and len(export[r.key].proposals) > max_proposals]
            if over:
                logger.warning(
                    "%d images have more than --max_proposals %d proposals (e.g. %r); the lowest-scored are not used",
                    len(over),
                    max_proposals,
                    over[0],
                )
        self.records = list(records)
        self.export = export
        self.use_proposals = use_proposals
        self.logit_lens = logit_lens
        self.logit_lens_channels = self._lens_channels()
        self.image_size = image_size
        self.max_proposals = max_proposals
        self.blur_sigma = blur_sigma

    def _lens_channels(self) -> int:
        """Channels of the logit-lens features, checked to be the same kind from the same layers on every record."""
        if self.logit_lens == "off":
            return 0
        if self.logit_lens not in LENS_FEATURES:
            raise ValueError(f"--logit_lens must be off, {' or '.join(LENS_FEATURES)}, got {self.logit_lens!r}")
        if self.export is None:
            raise ValueError(f"--logit_lens {self.logit_lens} reads the export: give its proposals JSONL")
        if self.logit_lens == "phrases" and not self.use_proposals:
            raise ValueError("--logit_lens phrases gives each proposal its features; it needs --use_proposals true")
        first = None
        for r in self.records:
            lens = self.export[r.key].logit_lens
            if lens is None or lens.features != self.logit_lens:
                found = "no logit-lens features" if lens is None else f"{lens.features!r} features"
                raise ValueError(
                    f"--logit_lens {self.logit_lens}: image_id {r.key!r} has {found} in the export (export with "
                    f"launch/export.py --logit_lens_layers ... --logit_lens_features {self.logit_lens})"
                )
            if first is None:
                first = lens
            if lens.layers != first.layers:
                raise ValueError(
                    f"--logit_lens: image_id {r.key!r} has features of layers {lens.layers}, image_id "
                    f"{self.records[0].key!r} of layers {first.layers}; export them with the same --logit_lens_layers"
                )
        if self.logit_lens == "phrases":
            return len(first.layers)
        return len(first.layers) * np.load(first.path, mmap_mode="r").shape[0]

    def _lens(self, record: ExportRecord, order: list[int]) -> torch.Tensor:
        """The record's logit-lens features at ``image_size``: (len(order), layers, S, S) or (k * layers, S, S)."""
        lens = record.logit_lens
        array = torch.from_numpy(lens.load())
        if self.logit_lens == "phrases":
            if len(array) != len(record.proposals):
                raise ValueError(f"{lens.path}: {len(array)} phrase channels for {len(record.proposals)} proposals")
            array = array[order]
        elif array.shape[0] * array.shape[1] != self.logit_lens_channels:
            raise ValueError(
                f"{lens.path}: {array.shape[0]} x {array.shape[1]} top-k channels where the set's first image has "
                f"{self.logit_lens_channels} (export every image with the same --logit_lens_topk)"
            )
        s = self.image_size
        grids = array.reshape(-1, 1, *lens.grid)
        resized = F.interpolate(grids, size=(s, s), mode="bilinear", align_corners=False)
        return resized.reshape(*array.shape[:2], s, s) if self.logit_lens == "phrases" else resized.reshape(-1, s, s)

    def __len__(self) -> int:
        return len(self.records)

    def proposal_order(self, index: int) -> list[int]:
        """Indices into the export record's proposals that the item uses, in item order."""
        if self.export is None or not self.use_proposals:
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
            "lens": None if self.logit_lens == "off" else self._lens(self.export[r.key], order),
            "fixations": torch.from_numpy(fixation_map(scaled, s, s)).float(),
            "density": density,
        }


def collate(items: list[dict]) -> dict:
    """Stack items, padding proposals (and per-proposal lens features) to the batch's largest count (``valid`` marks
    real ones); ``lens`` is None without logit-lens features."""
    p = max(it["masks"].shape[0] for it in items)
    b, s = len(items), items[0]["image"].shape[-1]
    masks = torch.zeros((b, p, s, s))
    scores = torch.zeros((b, p))
    valid = torch.zeros((b, p), dtype=torch.bool)
    lens = items[0]["lens"]
    if lens is not None and lens.dim() == 4:  # per proposal: (P_i, layers, S, S)
        lens = torch.zeros((b, p, *lens.shape[1:]))
        for i, it in enumerate(items):
            lens[i, : len(it["lens"])] = it["lens"]
    elif lens is not None:
        lens = torch.stack([it["lens"] for it in items])
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
        "lens": lens,
        "fixations": torch.stack([it["fixations"] for it in items]),
        "density": torch.stack([it["density"] for it in items]),
    }


def build_dataset(
    data_config: PredictorDataConfig, split: str, use_proposals: bool = True, logit_lens: str = "off"
) -> FixationDataset:
    """Read the ``split`` ("train" or "eval") fixations and proposals named in ``data_config``; the export is read
    for its proposals and, with ``logit_lens`` not "off", its logit-lens features."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    fixations = getattr(data_config, f"{split}_fixations")
    proposals = getattr(data_config, f"{split}_proposals")
    if fixations is None or data_config.images_dir is None:
        raise ValueError(f"--{split}_fixations and --images_dir are required")
    if use_proposals and proposals is None:
        raise ValueError(f"--{split}_proposals is required unless --use_proposals false")
    if logit_lens != "off" and proposals is None:
        raise ValueError(f"--logit_lens {logit_lens} reads the export's features: --{split}_proposals is required")
    records = read_fixations(
        data_config.fixation_format,
        fixations,
        data_config.images_dir,
        data_config.on_out_of_bounds,
        data_config.fixation_maps_dir,
    )
    export = read_export(proposals) if use_proposals or logit_lens != "off" else None
    return FixationDataset(
        records,
        export,
        data_config.image_size,
        data_config.max_proposals,
        data_config.blur_sigma,
        logit_lens,
        use_proposals,
    )
