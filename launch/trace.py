"""Answer a question about an image and write the saliency maps of the answer.

    python launch/trace.py --model_name_or_path outputs/grpo-tiny --image img.png --question "..." \
        --output_dir out/ [--map flow|direct] [--saliency_row q|pos] [--saliency_layers 0 -1] [--max_new_tokens 256] \
        [--baselines attention rollout gradient integrated_gradients rise] [--boxes "[x1, y1, x2, y2]" ...]

Writes ``<kind>.png`` (the map over the image, boxes drawn), ``<kind>.npy`` (the map at the image size),
``panels.png`` (all side by side) and ``trace.json`` (answer, thinking text, spans). Several images (or a clip's
frames) instead of ``--image``: ``--images a.png b.png ... [--boxes ... --box_images 1 ...]`` writes ``<kind>_<i>.npy``
per image and ``<kind>.png`` as a strip of the images' overlays on one colour scale. ``--help`` lists every flag,
including TRL's model flags (``--dtype``, ``--attn_implementation``...).
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

from trl import ModelConfig

from launch.parser import Parser
from saliency.explain import TraceArguments, trace_image

if __name__ == "__main__":
    trace_args, model_args = Parser((TraceArguments, ModelConfig)).parse_args_and_config()
    summary = trace_image(trace_args, model_args)
    if summary["has_map"]:
        empty = [kind for kind, files in summary["maps"].items() if files["empty"]]
        note = f" (empty, nothing above 0: {', '.join(empty)})" if empty else ""
        print(f"answer: {summary['answer']!r}; maps written to {trace_args.output_dir}{note}")
    else:
        print(
            f"no map: {summary['reason']} (completion {summary['completion']!r}); see {trace_args.output_dir}/trace.json"
        )
