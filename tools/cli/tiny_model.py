"""Build a tiny random-weight llama GGUF for tests (well under 1 MB, loads in milliseconds).

The model is architecture ``llama`` with F32 weights drawn from numpy with a fixed seed, and a
SentencePiece-style vocabulary (``tokenizer.ggml.model = "llama"``):

* ``<unk>`` (0), ``<s>`` (1, BOS), ``</s>`` (2, EOS);
* the 256 byte-fallback tokens ``<0x00>`` .. ``<0xFF>`` (type BYTE), ids 3 .. 258;
* ``<|im_start|>`` (259) and ``<|im_end|>`` (260), CONTROL; ``<|im_end|>`` is the EOT token, so
  llama.cpp treats it as end-of-generation;
* ordinary pieces: ``▁``, every printable ASCII character with and without the ``▁`` space
  marker, and common English words with ``▁`` (with every prefix, so the SPM merge can reach
  them).

With ``fim`` set, three CONTROL tokens follow the ordinary pieces — ``<|fim_prefix|>``,
``<|fim_suffix|>``, ``<|fim_middle|>`` — and the header declares them as the fill-in-the-middle
tokens under ``fim`` = "fim" (``tokenizer.ggml.fim_pre_token_id`` …) or "legacy" (the older
``tokenizer.ggml.prefix_token_id`` …) keys. Without it the file is byte for byte as before.

Text round-trips exactly (anything outside the vocabulary goes through byte fallback). The
output rows of the special tokens are zero and the other logits are spread wide, so sampling
practically never emits EOS/EOT/control tokens: random generation runs to ``max_tokens``.

``python -m hearth.tools.cli.tiny_model OUT.gguf [--seed N] [--n-ctx-train N] [--no-chat-template]
[--fim fim|legacy]``

Needs the ``gguf`` and ``numpy`` packages (test dependencies), imported only when building.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "FIM_TOKENS",
    "IM_END_ID",
    "IM_START_ID",
    "N_EMBD",
    "N_FF",
    "N_HEAD",
    "N_HEAD_KV",
    "N_LAYER",
    "ORDINARY_END",
    "TINY_CHAT_TEMPLATE",
    "UNK_ID",
    "build_tiny_model",
    "main",
]

# ChatML-style: <|im_start|>{role}\n{content}<|im_end|>\n ... then <|im_start|>assistant\n
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- elif message['content'] %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
RMS_EPS = 1e-5

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_FIRST_BYTE_ID = 3
IM_START_ID = _FIRST_BYTE_ID + 256  # 259
IM_END_ID = IM_START_ID + 1  # 260

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")  # with fim: the last ids
FIM_KEYS = {"fim": ("fim_pre", "fim_suf", "fim_mid"), "legacy": ("prefix", "suffix", "middle")}

SPACE = "\u2581"  # ▁, SentencePiece's whitespace marker

# Common English words (lower case); each gets "▁word" and its prefixes in the vocabulary.
_WORDS = """
the of and to in is it you that he was for on are with as his they be at one have this from
or had by not word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end
put home read hand port large spell add even land here must big high such follow act why ask
men change went light kind off need house picture try us again animal point mother world near
build self earth father head stand own page should country found answer school grow study still
learn plant cover food sun four between state keep eye never last let thought city tree cross
farm hard start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group always
music those both mark often letter until mile river car feet care second book carry took science
eat room friend began idea fish mountain stop once base hear horse cut sure watch color face
wood main enough plain girl usual young ready above ever red list though feel talk bird soon
body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since
top whole king space heard best hour better true during hundred five remember step early hold
west ground interest reach fast verb sing listen six table travel less morning ten simple
several toward war lay against pattern slow center love person money serve appear road map rain
rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine
note wait plan figure star box noun field rest correct able pound done beauty drive stood
contain front teach week final gave green quick brown fox jumps lazy hello model token test
""".split()


def _vocabulary(fim: bool = False, extra: Sequence[str] = ()) -> tuple[
        list[str], list[float], list[int]]:
    """Tokens, scores and token types (gguf.TokenType values) of the tiny vocabulary."""
    normal, unknown, control, byte = 1, 2, 3, 6
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    scores: list[float] = [0.0, 0.0, 0.0]
    types: list[int] = [unknown, control, control]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(byte)
    for special in ("<|im_start|>", "<|im_end|>"):
        tokens.append(special)
        scores.append(0.0)
        types.append(control)
    assert tokens[IM_START_ID] == "<|im_start|>" and tokens[IM_END_ID] == "<|im_end|>"

    # Ordinary pieces, roughly most-frequent first. Scores play the role of SentencePiece log
    # probabilities: the SPM tokenizer merges the highest-scoring pair first.
    pieces: dict[str, None] = {SPACE: None}
    printable = [chr(c) for c in range(33, 127)]
    for ch in printable:
        pieces[ch] = None
    for ch in printable:
        pieces[SPACE + ch] = None
    for word in _WORDS:
        full = SPACE + word
        for end in range(3, len(full) + 1):
            pieces[full[:end]] = None
    for rank, piece in enumerate(pieces):
        tokens.append(piece)
        scores.append(-1.0 - rank / 100.0)
        types.append(normal)
    for piece in extra:
        tokens.append(piece)
        scores.append(-100.0)  # never merged into by the tokenizer: only generated
        types.append(normal)
    if fim:
        for special in FIM_TOKENS:
            tokens.append(special)
            scores.append(0.0)
            types.append(control)
    return tokens, scores, types


ORDINARY_END = len(_vocabulary()[0])  # the first id after the ordinary pieces


def build_tiny_model(
    path: pathlib.Path,
    *,
    seed: int = 0,
    chat_template: str | None = TINY_CHAT_TEMPLATE,
    n_ctx_train: int = 4096,
    split_max_tensors: int = 0,
    fim: Literal["fim", "legacy"] | None = None,
    extra_pieces: Sequence[str] = (),
) -> pathlib.Path:
    """Write the tiny model to ``path`` (parents created) and return ``path``.

    The bytes written depend only on the arguments: the same seed gives the same file.
    ``split_max_tensors`` > 0 writes llama.cpp's gguf-split format instead (as
    ``convert_hf_to_gguf.py --split-max-tensors`` does: ``split.*`` metadata in every part),
    named ``{stem}-00001-of-0000N.gguf`` … beside ``path``; the first part's path is returned.
    ``extra_pieces``: more ordinary pieces (e.g. ``</think>``, for a test to make the model write
    it with ``logit_bias``), ids ``ORDINARY_END`` on, in order.
    """
    try:
        import gguf
        import numpy as np
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "building the tiny model needs the 'gguf' and 'numpy' packages "
            "(pip install 'hearth[test]')"
        ) from exc

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocabulary(fim is not None, extra_pieces)
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    # numpy shapes are (rows, cols) = (out, in); gguf stores them reversed (ggml order).
    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", normal((n_vocab, N_EMBD), 1.0))]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32)),
            (p + "attn_q.weight", normal((N_EMBD, N_EMBD), 0.1)),
            (p + "attn_k.weight", normal((n_embd_kv, N_EMBD), 0.1)),
            (p + "attn_v.weight", normal((n_embd_kv, N_EMBD), 0.1)),
            (p + "attn_output.weight", normal((N_EMBD, N_EMBD), 0.1)),
            (p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32)),
            (p + "ffn_gate.weight", normal((N_FF, N_EMBD), 0.1)),
            (p + "ffn_up.weight", normal((N_FF, N_EMBD), 0.1)),
            (p + "ffn_down.weight", normal((N_EMBD, N_FF), 0.1)),
        ]
    tensors.append(("output_norm.weight", np.ones(N_EMBD, dtype=np.float32)))
    # After the final RMS norm the hidden state has unit RMS, so each logit is ~N(0, 0.4^2 * 64)
    # = N(0, 3.2^2). Special tokens get logit 0: with ~1000 competitors spread that wide their
    # probability at temperature 1 is ~1e-5, and greedy never picks them. Byte tokens are made
    # less likely (but still possible, to exercise UTF-8-safe detokenizing).
    output = normal((n_vocab, N_EMBD), 0.4)
    output[[UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID]] = 0.0
    if fim is not None:
        output[n_vocab - len(FIM_TOKENS):] = 0.0
    output[_FIRST_BYTE_ID : _FIRST_BYTE_ID + 256] *= 0.25
    tensors.append(("output.weight", output))

    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    try:
        writer.add_name("hearth-tiny")
        writer.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
        writer.add_context_length(n_ctx_train)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_vocab_size(n_vocab)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(UNK_ID)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_eot_token_id(IM_END_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(True)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        if fim is not None:
            first = n_vocab - len(FIM_TOKENS)
            for i, key in enumerate(FIM_KEYS[fim]):
                writer.add_uint32(f"tokenizer.ggml.{key}_token_id", first + i)

        for name, array in tensors:
            writer.add_tensor(name, array)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        parts = writer.format_shard_names(path)
    finally:
        writer.close()
    return parts[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hearth.tools.cli.tiny_model",
        description="Write a tiny random-weight llama GGUF for tests.",
    )
    parser.add_argument("out", type=pathlib.Path, help="output .gguf path")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed for the weights")
    parser.add_argument(
        "--n-ctx-train", type=int, default=4096, help="llama.context_length (default 4096)"
    )
    parser.add_argument(
        "--no-chat-template", action="store_true", help="leave tokenizer.chat_template out"
    )
    parser.add_argument("--fim", choices=sorted(FIM_KEYS),
                        help="add fill-in-the-middle tokens, declared under these header keys")
    args = parser.parse_args(argv)
    out = build_tiny_model(
        args.out,
        seed=args.seed,
        chat_template=None if args.no_chat_template else TINY_CHAT_TEMPLATE,
        n_ctx_train=args.n_ctx_train,
        fim=args.fim,
    )
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
