"""Prompt templates as data: the paper's three zero-shot formats and the tokenizer's chat template.

A text template is filled and tokenised as is (the tokenizer adds BOS if it does so by default,
as the paper's code did); a chat template goes through `tokenizer.apply_chat_template`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import UserError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
REASON_INSTRUCTION = "Think step by step, then end with 'The answer is N.'"


@dataclass(frozen=True)
class PromptTemplate:
    """name: registry key. text: the prompt (kind "text") or the user message (kind "chat"), with
    the literal placeholder `{question}`. system: chat only; None keeps the tokenizer's default."""

    name: str
    kind: Literal["text", "chat"]
    text: str
    system: str | None = None


TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (
    PromptTemplate("deepseek-math", "text",
                   "User: {question}\n" + BOXED_INSTRUCTION + "\n\nAssistant:"),
    PromptTemplate("mistral", "text", "[INST] {question}[/INST]"),
    PromptTemplate("qwen25-math-cot", "text",
                   "<|im_start|>system\n" + BOXED_INSTRUCTION + "<|im_end|>\n"
                   "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"),
    PromptTemplate("chat", "chat", "{question}\n" + BOXED_INSTRUCTION),
    PromptTemplate("chat-plain", "chat", "{question}"),
    # the bundled SmolLM2 post-trainings were trained and evaluated with this prompt
    PromptTemplate("chat-final-number", "chat", "{question} Give only the final number."),
    # the same instruction for tokenizers without a chat template (the tiny test models)
    PromptTemplate("qa-final-number", "text", "Q: {question} Give only the final number.\nA:"),
    # the reasoning format of the bundled SmolLM2 post-trainings: steps, then a final sentence that the
    # graders read ("the answer is N"); a one-line system prompt keeps the prompt short (EAP cost)
    PromptTemplate("chat-reason", "chat", "{question}\n" + REASON_INSTRUCTION, system="You are a helpful assistant."),
    PromptTemplate("qa-reason", "text", "Q: {question}\n" + REASON_INSTRUCTION + "\nA:"),
    PromptTemplate("bare", "text", "{question}"),  # the question as is (models trained on raw problems)
)}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise UserError(f"unknown prompt template {name!r}; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def render_prompt(template: PromptTemplate, question: str, tokenizer=None) -> str:
    """The prompt string for one question (chat templates need the tokenizer)."""
    filled = template.text.replace("{question}", question)
    if template.kind == "text":
        return filled
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(f"template {template.name!r} uses the tokenizer's chat template, but this "
                        "tokenizer has none; pick a text template such as deepseek-math")
    messages = ([{"role": "system", "content": template.system}] if template.system else [])
    messages.append({"role": "user", "content": filled})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(template: PromptTemplate, question: str, tokenizer) -> tuple[str, list[int]]:
    """(prompt string, prompt token ids). Chat prompts already hold their special tokens."""
    prompt = render_prompt(template, question, tokenizer)
    ids = tokenizer(prompt, add_special_tokens=template.kind == "text")["input_ids"]
    return prompt, list(ids)
