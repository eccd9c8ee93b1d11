"""A small local batch engine for tests: answers OpenAI batch request files through a real
OpenAI-compatible server with the real ``openai`` client and writes output files in the format
``vllm run-batch`` writes (error lines carry the status code and the server's error)."""

from __future__ import annotations

import json
from pathlib import Path

import openai


def answer_file(requests: Path, outputs: Path, base_url: str, api_key: str = "EMPTY") -> int:
    """Answer every line of ``requests`` into ``outputs``; returns the number of lines."""
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    count = 0
    try:
        with requests.open(encoding="utf-8") as source, outputs.open("w") as sink:
            for number, text in enumerate(source):
                request = json.loads(text)
                assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
                sink.write(json.dumps(_answer(client, request, number)) + "\n")
                count += 1
    finally:
        client.close()
    return count


def _answer(client: openai.OpenAI, request: dict, number: int) -> dict:
    line = {"id": f"local-{number}", "custom_id": request["custom_id"], "error": None}
    try:
        body = client.post("/chat/completions", body=request["body"], cast_to=bytes)
    except openai.APIStatusError as exc:
        line["response"] = {"status_code": exc.status_code, "request_id": f"r{number}"}
        line["error"] = exc.body if isinstance(exc.body, dict) else str(exc.message)
        return line
    line["response"] = {"status_code": 200, "request_id": f"r{number}", "body": json.loads(body)}
    return line
