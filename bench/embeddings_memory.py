"""Worker memory (RSS) of embeddings: the embeddings context as hearth makes it now vs the
settings it had before (llama.cpp's mean pooling, a whole batch in one ``llama_decode``).

    .venv/bin/python bench/embeddings_memory.py [--long 1024] [--threads N] [--model PATH]

Each side runs in a fresh process on the benchmarks' model (gemma-3-270m) in the same run, and
reports its RSS after loading the model, after making the embeddings context, after the first
embeddings (8 short inputs), after a batch of 8 x 64 tokens and after one --long token input.
The gap is llama.cpp's output buffer: it keeps vocabulary-wide logits for every token of an
embeddings call (262,144 floats, 1 MiB, a token on gemma), which hearth now bounds by
evaluating CHUNK_TOKENS tokens per call (engine/embeddings.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

N_CTX = 4096  # the default --ctx-size: the embeddings context's size
N_SEQ = 64
STAGES = ["model loaded", "context made", "first embeddings", "8 x 64 tokens", "long input"]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def old_embedder(model: object, threads: int) -> Callable[[Sequence[Sequence[int]]], None]:
    """The settings before the fix: mean pooling inside llama.cpp, n_ubatch = n_ctx."""
    import llama_cpp as ll

    p = ll.llama_context_default_params()
    p.n_ctx = p.n_batch = p.n_ubatch = N_CTX
    p.n_seq_max = N_SEQ
    p.n_threads = p.n_threads_batch = threads
    p.embeddings = True
    p.no_perf = True
    p.kv_unified = True
    p.pooling_type = ll.LLAMA_POOLING_TYPE_MEAN
    ctx = ll.llama_init_from_model(model, p)
    batch = ll.llama_batch_init(N_CTX, 0, 1)
    mem = ll.llama_get_memory(ctx)

    def embed(inputs: Sequence[Sequence[int]]) -> None:
        i = 0
        for seq, toks in enumerate(inputs):
            for pos, tok in enumerate(toks):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, True
                i += 1
        batch.n_tokens = i
        assert ll.llama_decode(ctx, batch) == 0
        ll.llama_memory_clear(mem, True)
    return embed


def child(side: str, path: str, long: int, threads: int) -> None:
    import llama_cpp as ll
    from hearth.engine.embeddings import EmbeddingContext

    ll.llama_backend_init()
    quiet = ll.llama_log_callback(lambda *_: None)
    ll.llama_log_set(quiet, None)
    model = ll.llama_model_load_from_file(path.encode(), ll.llama_model_default_params())
    seen = [rss_mib()]
    if side == "old":
        embed = old_embedder(model, threads)
    else:
        ectx = EmbeddingContext(model, n_ctx=N_CTX, n_seq_max=N_SEQ, n_threads=threads,
                                pool_mean=True)
        embed = ectx.embed  # type: ignore[assignment]
    seen.append(rss_mib())
    embed([[2, 100 + i, 200, 300, 400, 500, 600, 700] for i in range(8)])
    seen.append(rss_mib())
    embed([[2, *range(1000 + s, 1063 + s)] for s in range(8)])
    seen.append(rss_mib())
    embed([[2, *range(1000, 1000 + long - 1)]])
    seen.append(rss_mib())
    print(json.dumps(seen))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=int, default=1024, help="tokens of the long input")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="a GGUF (default: the benchmarks' gemma-3-270m)")
    ap.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.long, args.threads)
        return 0
    if not args.model:
        from common import bench_model
        args.model = str(bench_model())
    result = {}
    for side in ("old", "new"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", side, "--model", args.model,
             "--long", str(args.long), "--threads", str(args.threads)],
            check=True, capture_output=True, text=True).stdout
        result[side] = json.loads(out.strip().splitlines()[-1])
    print(f"{Path(args.model).name}, embeddings context of {N_CTX} tokens, "
          f"long input {args.long} tokens: worker RSS in MiB")
    print(f"{'':<18}{'before (baseline)':>18}{'now':>10}{'ratio':>8}")
    for i, stage in enumerate(STAGES):
        old, new = result["old"][i], result["new"][i]
        print(f"{stage:<18}{old:>18.0f}{new:>10.0f}{new / old:>8.2f}")
    grown = [result[s][-1] - result[s][0] for s in ("old", "new")]
    print(f"{'embeddings cost':<18}{grown[0]:>18.0f}{grown[1]:>10.0f}{grown[1] / grown[0]:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
