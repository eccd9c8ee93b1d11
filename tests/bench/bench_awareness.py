"""Benchmark of the eval-awareness detector on the labelled snippets.

Prints one JSON object: precision/recall/F1 (with 95% Wilson intervals) per batch of the labelled
set (dev batches were tuned on; holdout batches were not), for the held-out union and for all
snippets; snippets per second on one core; and the same figures for a bag-of-words baseline
measured in this process (a keyword search for test/eval/grader/watch/monitor words), with the
ratios between the two.

Run: ``python tests/bench/bench_awareness.py``
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from audit.graders.awareness import detect_awareness, score_labels

SNIPPETS = Path(__file__).resolve().parents[1] / "data" / "awareness_snippets.jsonl"
_BAG_OF_WORDS = re.compile(
    r"\b(?:test\w*|eval\w*|grader\w*|watcher\w*|monitor\w*|scoreboard|honeypot|sandbox|"
    r"simulat\w*|trap)\b",
    re.IGNORECASE,
)


def _bag_of_words(text: str) -> bool:
    return _BAG_OF_WORDS.search(text) is not None


def _lexicon(text: str) -> bool:
    return detect_awareness(text).detected


def _quality(rows: list[dict], predict: Callable[[str], bool]) -> dict[str, dict]:
    groups = {f"{r['batch']}/{r['split']}" for r in rows}
    chosen_by_name = {
        name: [r for r in rows if f"{r['batch']}/{r['split']}" == name] for name in groups
    }
    chosen_by_name["held_out_union"] = [r for r in rows if r["split"] == "holdout"]
    chosen_by_name["dev_union"] = [r for r in rows if r["split"] == "dev"]
    chosen_by_name["all"] = rows
    figures = {}
    for name in sorted(chosen_by_name):
        scores = score_labels((predict(r["text"]), r["aware"]) for r in chosen_by_name[name])
        figures[name] = {
            key: (round(v, 4) if isinstance(v, float) else v)
            for key, v in scores.as_dict().items()
            if key not in ("precision_ci", "recall_ci")
        } | {
            "precision_ci": [round(x, 4) for x in scores.precision_interval() or ()],
            "recall_ci": [round(x, 4) for x in scores.recall_interval() or ()],
        }
    return figures


def _throughput(texts: list[str], predict: Callable[[str], bool], seconds: float = 1.5) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for text in texts:
            predict(text)
        done += len(texts)
    return done / (time.perf_counter() - start)


def main() -> None:
    rows = [json.loads(line) for line in SNIPPETS.read_text(encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    # Transcript-sized inputs: ten snippets of reasoning joined into one text (~1.2 kB).
    long_texts = [" ".join(texts[i : i + 10]) for i in range(0, len(texts) - 10, 10)]
    lexicon_rate = _throughput(texts, _lexicon)
    baseline_rate = _throughput(texts, _bag_of_words)
    lexicon_quality = _quality(rows, _lexicon)
    baseline_quality = _quality(rows, _bag_of_words)
    result = {
        "benchmark": "awareness_detector",
        "n_snippets": len(rows),
        "lexicon": {
            "quality": lexicon_quality,
            "snippets_per_s": round(lexicon_rate),
            "long_texts_per_s": round(_throughput(long_texts, _lexicon)),
            "long_text_mean_chars": round(sum(map(len, long_texts)) / len(long_texts)),
        },
        "baseline_bag_of_words": {
            "quality": baseline_quality,
            "snippets_per_s": round(baseline_rate),
        },
        "ratios": {
            "precision_all_vs_baseline": round(
                lexicon_quality["all"]["precision"] / baseline_quality["all"]["precision"], 3
            ),
            "speed_vs_baseline": round(lexicon_rate / baseline_rate, 4),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
