"""N-gram speculative decoding: generation speed with drafting on against off, in the same run.

One hearth server with ``--speculative``; every request is greedy (or samples at
``--temperature``, seeded), and the "off" requests send
``speculative_decoding: false``, so both sides run on the same process, model and cache, taking
turns (a warm-up round first, so that every prompt is cached the same way for both).

Workloads (completions, so a base model works too):

* **edit** — the prompt holds a ~400-token Python file and asks for it back with one name
  changed; the answer begins repeating the file, as a base model continues it. Drafts mostly
  succeed: the answer is the prompt again.
* **chat** — unique questions; drafts are proposed only where the answer repeats itself, and
  mostly fail: what speculation costs where it does not help.

At 1 and 4 streams (concurrent requests, each its own prompt), medians of ``--repeat`` runs;
prints generated tokens/s on and off, their ratio, and the draft acceptance from /metrics.

    .venv/bin/python bench/speculation.py [--model gemma-3-270m-q4_k_m] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, all_at_once, bench_model, hearth_server, post
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

SOURCE = '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 1
    tags: list[str] = field(default_factory=list)

    def total(self) -> float:
        return self.price * self.quantity


@dataclass
class Basket:
    owner: str
    items: list[Item] = field(default_factory=list)

    def add(self, item: Item) -> None:
        for known in self.items:
            if known.name == item.name:
                known.quantity += item.quantity
                return
        self.items.append(item)

    def remove(self, name: str) -> bool:
        for i, known in enumerate(self.items):
            if known.name == name:
                del self.items[i]
                return True
        return False

    def total(self) -> float:
        return sum(item.total() for item in self.items)

    def tagged(self, tag: str) -> list[Item]:
        return [item for item in self.items if tag in item.tags]

    def save(self, path: Path) -> None:
        data = {"owner": self.owner,
                "items": [{"name": i.name, "price": i.price, "quantity": i.quantity,
                           "tags": i.tags} for i in self.items]}
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Basket":
        data = json.loads(path.read_text())
        basket = cls(data["owner"])
        for raw in data["items"]:
            basket.add(Item(raw["name"], raw["price"], raw["quantity"], raw["tags"]))
        return basket


def cheapest(basket: Basket) -> Item | None:
    if not basket.items:
        return None
    return min(basket.items, key=lambda item: item.price)


def main() -> None:
    basket = Basket("ada")
    basket.add(Item("apple", 0.5, 6, ["fruit"]))
    basket.add(Item("bread", 2.25, 1, ["bakery"]))
    basket.add(Item("cheese", 4.75, 1, ["dairy"]))
    print(f"{basket.owner} pays {basket.total():.2f}")
    print("cheapest:", cheapest(basket))


if __name__ == "__main__":
    main()
'''

RENAMES = [("cheapest", "least_costly"), ("tagged", "with_tag"), ("owner", "holder"),
           ("remove", "discard")]
TOPICS = ["the history of the printing press", "how bees make honey",
          "why the sky is blue", "the rules of cricket", "how a bicycle stays upright",
          "what causes ocean tides", "how vaccines train the immune system",
          "the life of a star", "how bread rises", "why cats purr", "how glaciers move",
          "the invention of the telephone", "how tea is grown", "why leaves change colour",
          "how a lock and key work", "the water cycle"]


def edit_prompt(i: int) -> str:
    """The file, then the start of its copy with one name changed: a base model (the bench
    model is one) goes on copying."""
    old, new = RENAMES[i % len(RENAMES)]
    start = "\n".join(SOURCE.split("\n")[:8])
    return (f"# file: basket.py\n{SOURCE}\n# file: basket_v2.py (basket.py with `{old}` "
            f"renamed to `{new}`; otherwise identical)\n{start}\n")


def chat_prompt(i: int, run: int) -> str:
    topic = TOPICS[(i + 4 * run) % len(TOPICS)]
    return f"Question: Explain {topic} in a few paragraphs.\nAnswer:"


def complete(port: int, prompt: str, max_tokens: int, speculative: bool) -> int:
    body: dict[str, Any] = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                            "temperature": TEMPERATURE, "seed": 7}
    if not speculative:
        body["speculative_decoding"] = False
    return int(post(port, "/v1/completions", body)["usage"]["completion_tokens"])


def run_round(port: int, prompts: list[str], max_tokens: int, speculative: bool) -> float:
    """Tokens/s of all ``prompts`` run at once (one stream each)."""
    made = [0] * len(prompts)

    def one(i: int) -> None:
        made[i] = complete(port, prompts[i], max_tokens, speculative)

    seconds = all_at_once(len(prompts), one)
    return sum(made) / seconds


def drafts(port: int) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {KEY}"})
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    got = {"proposed": 0.0, "accepted": 0.0}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "hearth_draft_tokens_total" and s.labels.get("model") == MODEL:
                got[s.labels["outcome"]] = s.value
    return got["proposed"], got["accepted"]


MODEL = BENCH_MODEL_ID
TEMPERATURE = 0.0


def main() -> None:
    global MODEL, TEMPERATURE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=BENCH_MODEL_ID, help="a model id in the bench cache")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--streams", default="1,4")
    ap.add_argument("--workloads", default="edit,chat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-max", type=int, default=8)
    ap.add_argument("--draft-ngram", type=int, default=3)
    ap.add_argument("--edit-tokens", type=int, default=384)
    ap.add_argument("--chat-tokens", type=int, default=128)
    ap.add_argument("--port", type=int, default=18431)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="every request's (0: greedy; above: speculative sampling)")
    args = ap.parse_args()
    MODEL, TEMPERATURE = args.model, args.temperature
    models = bench_model().parent
    streams = [int(s) for s in args.streams.split(",")]
    with hearth_server(models, args.port, "--speculative", "--parallel", str(max(streams)),
                       "--threads", str(args.threads), "--ctx-size", "2048",
                       "--draft-max", str(args.draft_max), "--draft-ngram",
                       str(args.draft_ngram), model=MODEL):
        print(f"model {MODEL}, threads {args.threads}, draft_max {args.draft_max}, "
              f"draft_ngram {args.draft_ngram}, temperature {args.temperature}, "
              f"medians of {args.repeat}")
        print("| workload | streams | off tok/s | on tok/s | on/off | drafts accepted |")
        print("|---|---|---|---|---|---|")
        for workload in args.workloads.split(","):
            for n in streams:
                tokens = args.edit_tokens if workload == "edit" else args.chat_tokens
                rates: dict[bool, list[float]] = {False: [], True: []}
                proposed = accepted = 0.0
                for run in range(args.repeat + 1):  # run 0: warm-up, not counted
                    prompts = ([edit_prompt(i) for i in range(n)] if workload == "edit"
                               else [chat_prompt(i, run) for i in range(n)])
                    order = (False, True) if run % 2 else (True, False)
                    for on in order:
                        d0 = drafts(args.port)
                        rate = run_round(args.port, prompts, tokens, on)
                        time.sleep(1.2)  # the worker's counters reach /metrics
                        d1 = drafts(args.port)
                        if run:
                            rates[on].append(rate)
                            if on:
                                proposed += d1[0] - d0[0]
                                accepted += d1[1] - d0[1]
                off, on_ = statistics.median(rates[False]), statistics.median(rates[True])
                share = f"{accepted / proposed:.0%} of {proposed:.0f}" if proposed else "none"
                print(f"| {workload} | {n} | {off:.1f} | {on_:.1f} | {on_ / off:.3f} | "
                      f"{share} |", flush=True)


if __name__ == "__main__":
    main()
