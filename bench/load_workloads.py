"""The prompts of bench/load.py's workloads (see its docstring for what each measures).

Every prompt is numbered: a run gives each request its own number, so no two requests of a run
share more than the workload means them to (a shared system prompt, a conversation's history).
"""

from __future__ import annotations

TOPICS = ["a lighthouse", "a city garden", "the sea", "a mountain pass", "a violin maker",
          "a night train", "an old library", "a desert well", "a bakery", "a glacier",
          "a chess club", "a lost key", "a clockmaker", "a river ferry", "a comet", "a market"]
SYSTEM = " ".join(
    f"Rule {i}: answer in plain words, stay kind, cite no sources, and keep every reply focused "
    f"on the question about item {i}." for i in range(20))

# the workloads that stream independent requests, and the one that holds conversations
MODES = ("unique", "chat", "shared", "unique-long", "edit")
SWITCH = "switch"

Message = dict[str, str]


def source_file(i: int) -> str:
    """A Python module of about 420 tokens (417 with gemma-3's tokenizer), numbered ``i``
    in its first line so no two requests share a prefix."""
    return f'''"""Inventory module {i}: stock levels, reorder points and a small report."""

from dataclasses import dataclass, field


@dataclass
class Item:
    sku: str
    name: str
    on_hand: int = 0
    reorder_at: int = 5
    history: list[int] = field(default_factory=list)

    def receive(self, count: int) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        self.on_hand += count
        self.history.append(count)

    def ship(self, count: int) -> bool:
        if count > self.on_hand:
            return False
        self.on_hand -= count
        self.history.append(-count)
        return True

    def needs_reorder(self) -> bool:
        return self.on_hand <= self.reorder_at


def load(rows: list[tuple[str, str, int]]) -> dict[str, Item]:
    items: dict[str, Item] = {{}}
    for sku, name, count in rows:
        items[sku] = Item(sku, name, on_hand=count)
    return items


def report(items: dict[str, Item]) -> str:
    lines = []
    for sku in sorted(items):
        item = items[sku]
        flag = "REORDER" if item.needs_reorder() else "ok"
        lines.append(f"{{sku:<8}} {{item.name:<20}} {{item.on_hand:>5}} {{flag}}")
    return "\\n".join(lines)


def total_units(items: dict[str, Item]) -> int:
    return sum(item.on_hand for item in items.values())
'''


def messages(i: int, mode: str) -> list[Message]:
    """unique (alias chat): a short unique prompt. shared: a ~500-token system prompt common to
    every request, then a unique question. unique-long: the same length as shared, but unique
    from the first word (the baseline the shared-prefix TTFT is compared with). edit: a
    ~400-token source file and a request for all of it back with one small change (the reply
    mostly repeats the prompt: what n-gram speculation drafts from)."""
    user = f"Story {i}: write a long story about {TOPICS[i % len(TOPICS)]} (variant {i})."
    if mode == "shared":
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    if mode == "unique-long":
        return [{"role": "system", "content": f"Session {i} of {TOPICS[i % len(TOPICS)]}. "
                 + SYSTEM}, {"role": "user", "content": user}]
    if mode == "edit":
        return [{"role": "user", "content":
                 f"Here is a file:\n\n```python\n{source_file(i)}```\n\nChange the default "
                 "reorder_at from 5 to 10 and give me the whole file back, every line, in one "
                 "code block."}]
    return [{"role": "user", "content": user}]


def switch_turn(conversation: int, turn: int) -> Message:
    """The user message of ``turn`` (0-based) in conversation ``conversation`` of the switch
    workload."""
    topic = TOPICS[conversation % len(TOPICS)]
    if turn == 0:
        return {"role": "user", "content": f"Conversation {conversation}: "
                + SYSTEM[:len(SYSTEM) // 2] + f" Tell me about {topic}."}
    return {"role": "user", "content": f"Turn {turn}: tell me more about {topic}, another "
            "detail, in a few sentences."}
