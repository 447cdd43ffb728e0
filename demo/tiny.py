"""A tiny randomly initialised chat model, built fully offline.

Why: tests and the offline demo cannot download models, yet they must exercise the real local
path (`transformers serve` loading a model directory by path, TRL training on it). This builds a
ChatML chat model of about 200 kB in seconds, byte for byte the same for a given seed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD, EOS, START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"

# ChatML; content may be a string or a list of text parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "Hello! How can I help you today?",
    "I am a chat assistant, and I try to give short, clear and honest answers.",
    "Could you tell me more about what you are trying to do?",
    "Here is a simple explanation with an example.",
    "Thank you for the feedback, I will keep that in mind.",
    "The weather today is sunny with a light breeze in the afternoon.",
    "To install the package, run the command in your terminal and restart the server.",
    "A good answer is polite, correct, and gets to the point quickly.",
    "If you rate an answer, the assistant can learn which replies people prefer.",
    "Sorry, I do not know the answer to that question yet.",
    "Python is a programming language that is easy to read and write.",
    "Redis keeps data in memory and can write it to disk for safety.",
    "Please write your question in one or two sentences.",
    "The model streams its answer token by token so you see it as it is written.",
    "You can stop the answer at any time with the stop button.",
    "Training on ratings makes good answers more likely and bad answers less likely.",
    "What would you like to talk about next?",
    "The user asked a question and the assistant gave a helpful reply.",
    "Each message has a role: system, user or assistant.",
    "I can explain code, answer questions, and help you write text.",
]


def build_tokenizer(vocab_size: int, texts: Iterable[str] = CORPUS, max_length: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, with ChatML special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, START, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
    )


def build_tiny_model(out_dir: Path, vocab_size: int = 512, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tokenizer and a random Qwen2 model into out_dir (loadable by path); return out_dir."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=cast(int, pad_id),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # Random weights give near-uniform logits with one bump: tied embeddings favour repeating the
    # last input token (the "\n" after "assistant"), so greedy decoding answers "\n\n\n..." which
    # the app reports as an empty answer. So: sample (as real chat models' generation configs do;
    # a request's temperature applies, 0 is greedy again), never emit pad/<|im_start|> (they decode
    # to nothing), and never end before the first token. Answers are random but visible text.
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=True,
        min_new_tokens=1,
        suppress_tokens=[pad_id, tokenizer.convert_tokens_to_ids(START)],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build a tiny random chat model offline.")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny_model(args.out, seed=args.seed))
