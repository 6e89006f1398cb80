"""Column schemas of the three kinds of split every generator and converter writes."""

from __future__ import annotations

from datasets import Features, Image, List, Value

BOXES = List(List(Value("float64")))
"""A list of evidence boxes, each ``[x1, y1, x2, y2]`` normalised to [0, 1]."""

RL_FEATURES = Features(
    {
        "image": Image(),
        "problem": Value("string"),
        "solution": Value("string"),
        "bbox": BOXES,
        "dataset": Value("string"),
        "question_id": Value("string"),
    }
)
"""Grounded-reasoning rows for GRPO: one image, the question, the reference answer, the evidence boxes."""

EVAL_FEATURES = Features({**RL_FEATURES, "reasoning": Value("string")})
"""Held-out rows: the RL columns plus the reference reasoning."""

MULTI_RL_FEATURES = Features(
    {
        "images": List(Image()),
        "problem": Value("string"),
        "solution": Value("string"),
        "bbox": BOXES,
        "bbox_image": List(Value("int64")),
        "bbox_frame": List(Value("int64")),
        "dataset": Value("string"),
        "question_id": Value("string"),
    }
)
"""GRPO rows of a split that holds several images per row or short clips (SPEC section 2's ``images`` list). A row of
several images places each box on its image (``bbox_image``, per box the index into ``images``; ``bbox_frame`` None);
a clip holds its frames in order under ``images`` and places each box on its frame (``bbox_frame``; ``bbox_image``
None). A single-image row of such a split is a one-image list with every box on image 0."""

MULTI_EVAL_FEATURES = Features({**MULTI_RL_FEATURES, "reasoning": Value("string")})
"""Held-out rows of several images or clips: the columns of :data:`MULTI_RL_FEATURES` plus the reference reasoning."""

SFT_FEATURES = Features(
    {
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "images": List(Image()),
        "dataset": Value("string"),
        "question_id": Value("string"),
    }
)
"""Conversational cold-start rows (system, user with an image placeholder, assistant with <think>) plus images."""

BOXED_SFT_FEATURES = Features({**SFT_FEATURES, "bbox": BOXES})
"""SFT rows with the evidence boxes of what the assistant's answer is about (every SFT-layout split of the synthetic
data): the boxes `--attention_grounding_weight` trains the answer's attention towards."""

MULTI_SFT_FEATURES = Features({**BOXED_SFT_FEATURES, "bbox_image": List(Value("int64"))})
"""SFT rows of several images (a clip's frames given as images): ``bbox_image`` ties each box to its image, by index
into ``images``; what the attention-grounding loss of a several-image row needs."""

DECOY_FEATURES = Features({"decoy_answer": Value("string"), "decoy_bbox": BOXES})
"""Optional columns of a decoy benchmark (``python -m data_tools.synthetic --decoy_fraction p``): the answer a
spurious cue in the image says and the normalised box it lies in (``""`` and ``[]`` on a row without a cue). Row
validation keeps them when a source has both, and the evaluation then reports how often answers follow the cue and
how much of each map lies on it."""
