"""Chat templates of the tiny models, written for the ``[{"type": "image"}, {"type": "text", ...}]`` message format.

``QWEN_CHAT_TEMPLATE`` renders exactly what the Qwen2-VL / Qwen2.5-VL hub template renders (default system prompt
when the conversation has none, ``Picture n:`` labels under ``add_vision_id``, videos), so prompts built for the
tiny model are the prompts the real model sees. ``LLAVA_CHAT_TEMPLATE`` follows the LLaVA-1.5 ``USER:`` /
``ASSISTANT:`` layout and keeps the system prompt as a leading paragraph.

Both mark the assistant turns with ``{% generation %}`` (it changes nothing in the rendered text) so that
``return_assistant_tokens_mask=True`` works for assistant-only losses.
"""

from __future__ import annotations

QWEN_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Jinja runs with trim_blocks/lstrip_blocks in transformers; every newline below is an explicit '\n'.
QWEN_CHAT_TEMPLATE = (
    "{%- macro render_content(content, counts) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set counts.image = counts.image + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ counts.image ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set counts.video = counts.video + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ counts.video ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set counts = namespace(image=0, video=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render_content(message['content'], counts) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render_content(message['content'], counts) + '<|im_end|>' -}}"
    "{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

LLAVA_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}{{- '<image>\\n' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- render_content(message['content']) + '\\n\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'ASSISTANT: ' -}}"
    "{%- generation -%}{{- render_content(message['content']) + eos_token -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}{{- message['role'] | upper + ': ' + render_content(message['content']) + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT: ' -}}{%- endif -%}"
)
