"""Benchmark: batched generation (left padding, length-sorted, KV cache) vs one prompt at a time.

Same model, same prompts, greedy, same max_new_tokens; A/B alternated in one process.
Target: batched >= 4x the generated tokens/s of one-at-a-time.
Usage: python bench/generation_throughput.py [--n 32] [--batch-size 16] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tweets import tweets  # bench/tweets.py: run as python bench/<name>.py

from tunewise.config import ModelConfig, PromptConfig
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.generate import generate
from tunewise.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generation_throughput.json")
    args = parser.parse_args()

    loaded = load_model(ModelConfig(name=args.model))
    model, tok = loaded.model.eval(), loaded.tokenizer
    renderer = PromptRenderer(
        PromptConfig(template="Explain in one sentence how this tweet feels: {{ text }}"), "classification", tok, ["x"]
    )
    records = [Record("classification", {"text": t, "label": "x"}, "bench", i) for i, t in enumerate(tweets(args.n))]
    prompts = encode_prompts(tok, renderer, records)
    settings = {"max_new_tokens": args.max_new_tokens}

    generate(model, tok, prompts[:2], batch_size=2, **settings)  # warm-up
    seconds: dict[str, list[float]] = {"one_at_a_time": [], "batched": []}
    outputs: dict[str, list[str]] = {}
    for _ in range(2):  # alternate so machine drift hits both
        for name, batch in (("one_at_a_time", 1), ("batched", args.batch_size)):
            start = time.perf_counter()
            outputs[name] = generate(model, tok, prompts, batch_size=batch, **settings)
            seconds[name].append(time.perf_counter() - start)
    tokens = {k: sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in v) for k, v in outputs.items()}
    best = {k: min(v) for k, v in seconds.items()}
    rate = {k: tokens[k] / best[k] for k in best}
    same = sum(a == b for a, b in zip(outputs["one_at_a_time"], outputs["batched"], strict=True))
    report = {
        "model": args.model,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "seconds": best,
        "generated_tokens": tokens,
        "tokens_per_second": rate,
        "speedup": rate["batched"] / rate["one_at_a_time"],
        "identical_outputs": f"{same}/{len(prompts)}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("| generation | seconds | generated tokens | tokens/s |")
    print("|---|---|---|---|")
    for name in best:
        print(f"| {name} | {best[name]:.1f} | {tokens[name]} | {rate[name]:.1f} |")
    print(f"batched / one-at-a-time: {report['speedup']:.2f}x; identical outputs {report['identical_outputs']}")


if __name__ == "__main__":
    main()
