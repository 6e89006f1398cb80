"""Configuration dataclasses for the saliency predictor (parsed by ``trl.TrlParser``; no logic here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PredictorModelConfig:
    """Architecture of :class:`predictor.ExplainableSaliencyPredictor`."""

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = field(
        default="resnet18",
        metadata={"help": "ResNet layout of the dilated stride-8 backbone: resnet18, resnet34, resnet50 or resnet101."},
    )
    backbone_width: int = field(
        default=64,
        metadata={"help": "Channels of the first ResNet stage (64 = the published networks; small for tiny models)."},
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={"help": "Optional torchvision/timm ResNet state_dict (.pth or .safetensors); random init otherwise."},
    )
    feature_dim: int = field(default=256, metadata={"help": "Output channels of the 3x3 conv adapter."})
    refine_dim: int = field(default=32, metadata={"help": "Hidden channels of the proposal-mask refinement stack."})
    use_proposals: bool = field(
        default=True,
        metadata={"help": "Use the semantic proposals; false gives the proposals-off ablation (features only)."},
    )
    use_proposal_scores: bool = field(
        default=True,
        metadata={"help": "Feed each proposal's exported score to the prioritisation head beside its features."},
    )
    logit_lens: Literal["off", "phrases", "topk"] = field(
        default="off",
        metadata={
            "help": "Use the export's logit-lens patch features (launch/export.py --logit_lens_layers) as extra input "
            "channels: 'phrases' (each proposal's lens maps join the features its mask refines and pools; needs "
            "proposals), 'topk' (the image's top-k lens maps join the backbone features), or 'off'. Must match the "
            "export's --logit_lens_features.",
            "choices": ["off", "phrases", "topk"],
        },
    )
    logit_lens_channels: int = field(
        default=0,
        metadata={
            "help": "Channels of the logit-lens features: the export's layers ('phrases') or layers x k ('topk'); "
            "0 takes them from the training export (and must stay 0 with --logit_lens off)."
        },
    )


@dataclass
class PredictorDataConfig:
    """Where the human fixations, images and exported proposals live."""

    fixation_format: Literal["air", "osie", "salicon", "mit1003"] = field(
        default="air", metadata={"help": "Layout of the fixation files: air, osie, salicon or mit1003."}
    )
    train_fixations: str | None = field(
        default=None,
        metadata={
            "help": "Training fixations: a JSON file, (SALICON) a folder of .mat files, or (MIT1003) the "
            "ALLFIXATIONMAPS folder."
        },
    )
    eval_fixations: str | None = field(default=None, metadata={"help": "Evaluation fixations, same layout."})
    images_dir: str | None = field(default=None, metadata={"help": "Folder holding the stimuli images."})
    fixation_maps_dir: str | None = field(
        default=None,
        metadata={
            "help": "Optional folder of fixation-map PNGs named after the images (SALICON 'maps/'; MIT1003: the "
            "folder of its <name>_fixMap.jpg, ALLFIXATIONMAPS); "
            "otherwise density maps are built by blurring the fixations."
        },
    )
    train_proposals: str | None = field(
        default=None, metadata={"help": "Exported proposals JSONL for the training images."}
    )
    eval_proposals: str | None = field(default=None, metadata={"help": "Exported proposals JSONL for evaluation."})
    image_size: int = field(default=224, metadata={"help": "Square input size of the model, in pixels."})
    max_proposals: int = field(
        default=20, metadata={"help": "Proposals kept per image (highest exported score first); must be >= topk_start."}
    )
    blur_sigma: float = field(
        default=0.03,
        metadata={"help": "Gaussian sigma of the density map built from fixations, as a fraction of the longer side."},
    )
    on_out_of_bounds: Literal["error", "drop"] = field(
        default="error",
        metadata={"help": "Fixations outside the image: 'error' (name the record) or 'drop' (and count them)."},
    )


@dataclass
class PredictorTrainingConfig:
    """Optimisation, top-k annealing, checkpoints and evaluation of the predictor."""

    output_dir: str = field(default="outputs/predictor", metadata={"help": "Checkpoints and reports go here."})
    num_epochs: int = field(default=10, metadata={"help": "Training epochs."})
    batch_size: int = field(default=10, metadata={"help": "Images per optimisation step."})
    learning_rate: float = field(default=4e-4, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    topk: int = field(default=3, metadata={"help": "Proposals kept by the prioritisation head after annealing."})
    topk_start: int = field(default=20, metadata={"help": "Proposals kept in the first epoch."})
    topk_anneal_epochs: int = field(
        default=3, metadata={"help": "Epochs over which k goes linearly from topk_start to topk."}
    )
    nss_weight: float = field(default=1.0, metadata={"help": "Loss weight of -NSS."})
    kl_weight: float = field(default=10.0, metadata={"help": "Loss weight of KL divergence."})
    cc_weight: float = field(default=2.0, metadata={"help": "Loss weight of -CC."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    resume_from: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint file to resume from, or 'latest' (also 'true', 'last') for the newest in output_dir; "
            "with none there yet, training starts from scratch."
        },
    )
    save_every_epochs: int = field(default=1, metadata={"help": "Save a checkpoint every this many epochs."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads torch may use (torch.set_num_threads); torch's default when unset. The tiny recipes "
            "train about 2x faster with 1 than with 2 on a 2-core CPU, and far faster when other jobs share it."
        },
    )
    evaluate: bool = field(
        default=True,
        metadata={
            "help": "After training, evaluate on --eval_fixations when it is set; false trains only (evaluate with "
            "launch/predictor_eval.py, as the main job does)."
        },
    )
