"""The official `openai` Python SDK, unmodified, against `warden serve`.

Driven by crates/warden-cli/tests/it/sdk.rs, which asserts on what this prints: the script only
calls the SDK and reports what it got back (values, or the exception the SDK raised), one JSON
object per line, so a failed assertion shows everything the SDK saw.

    client.py api                # every call below; prints one line {"sdk": ..., "checks": {...}}
    client.py hold chat|responses

`hold` keeps a stream open for the test: it prints {"phase": "ready"} and waits for `go` on stdin
(the test gates the upstream), starts a stream (for `responses`, continuing a conversation, and
then checks that a second turn on it is refused as busy), prints {"phase": "streaming"} once the
first text arrived, and waits for `close` (disconnect) or `read` (read on to the end, e.g. after
the test killed the worker; then `next` makes one more request). Last it prints the outcome.

Environment: OPENAI_BASE_URL and OPENAI_API_KEY (read by the SDK itself), WARDEN_SDK_MODEL (the
model id served), WARDEN_SDK_WRONG_KEY (a key the server does not know).
"""

import json
import os
import sys

import openai
from openai import OpenAI

MODEL = os.environ["WARDEN_SDK_MODEL"]
USER = [{"role": "user", "content": "say hi"}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def client(**kw):
    # No retries: every answer the test sees is the server's first.
    return OpenAI(max_retries=0, timeout=60.0, **kw)


def say(obj):
    print(json.dumps(obj), flush=True)


def command():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("stdin closed before the next command")
    return line.strip()


def fault(e):
    """What the SDK made of a failure."""
    out = {"class": type(e).__name__, "message": str(e)}
    if isinstance(e, openai.APIError):
        out.update(code=e.code, param=e.param, type=e.type)
    if isinstance(e, openai.APIStatusError):
        out.update(status=e.status_code, request_id=e.request_id)
    return out


def attempt(fn):
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001 - every failure is a result to report
        return {"raised": fault(e)}


def usage(u):
    if u is None:
        return None
    if hasattr(u, "prompt_tokens"):
        return {"input": u.prompt_tokens, "output": u.completion_tokens, "total": u.total_tokens}
    return {"input": u.input_tokens, "output": u.output_tokens, "total": u.total_tokens}


def chat_once(c, messages=USER):
    r = c.chat.completions.create(model=MODEL, messages=messages)
    choice = r.choices[0]
    return {
        "id": r.id,
        "object": r.object,
        "model": r.model,
        "role": choice.message.role,
        "content": choice.message.content,
        "finish": choice.finish_reason,
        "usage": usage(r.usage),
        "request_id": r._request_id,
    }


def chunk(c):
    """One chat chunk, as the SDK parsed it."""
    d = c.choices[0].delta if c.choices else None
    return {
        "id": c.id,
        "model": c.model,
        "choices": len(c.choices),
        "role": d.role if d else None,
        "content": d.content if d else None,
        "finish": c.choices[0].finish_reason if c.choices else None,
        "usage": usage(c.usage),
    }


def chat_stream(c):
    s = c.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    return {"chunks": [chunk(x) for x in s]}


def responses_once(c):
    r = c.responses.create(model=MODEL, input="say hi")
    return {"id": r.id, "status": r.status, "text": r.output_text, "usage": usage(r.usage)}


def responses_helper(c):
    events = []
    text = ""
    with c.responses.stream(model=MODEL, input="stream it") as s:
        for ev in s:
            e = {"type": ev.type, "seq": ev.sequence_number}
            if ev.type == "response.output_text.delta":
                text += ev.delta
                e.update(item_id=ev.item_id, output_index=ev.output_index, content_index=ev.content_index)
            events.append(e)
        final = s.get_final_response()
    return {
        "events": events,
        "text": text,
        "final": {"id": final.id, "status": final.status, "text": final.output_text, "usage": usage(final.usage)},
    }


def conversation(c):
    first = c.responses.create(model=MODEL, input="remember FIRST-python-TOKEN")
    second = c.responses.create(model=MODEL, input="what did python say first?", previous_response_id=first.id)
    stale = attempt(lambda: c.responses.create(model=MODEL, input="again", previous_response_id=first.id).id)
    return {
        "first": first.id,
        "second": second.id,
        "status": second.status,
        "text": second.output_text,
        "previous": second.previous_response_id,
        "stale": stale,
    }


def api():
    c = client()
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": PNG}}]}]
    tool_message = USER + [{"role": "tool", "tool_call_id": "call_1", "content": "42"}]
    checks = {
        "models": attempt(lambda: {"ids": [m.id for m in c.models.list().data], "one": c.models.retrieve(MODEL).id}),
        "chat": attempt(lambda: chat_once(c, [{"role": "system", "content": "be brief"}] + USER)),
        "chat_stream": attempt(lambda: chat_stream(c)),
        "responses": attempt(lambda: responses_once(c)),
        "responses_stream": attempt(lambda: responses_helper(c)),
        "conversation": attempt(lambda: conversation(c)),
        "unknown_previous": attempt(
            lambda: c.responses.create(model=MODEL, input="x", previous_response_id="resp_unknown_0123").id
        ),
        "wrong_key": attempt(lambda: chat_once(client(api_key=os.environ["WARDEN_SDK_WRONG_KEY"]))),
        "unknown_model": attempt(lambda: c.chat.completions.create(model="no-such-model", messages=USER).id),
        "n": attempt(lambda: c.chat.completions.create(model=MODEL, messages=USER, n=2).id),
        "tools": attempt(lambda: c.chat.completions.create(model=MODEL, messages=USER, tools=[tool]).id),
        "image": attempt(lambda: c.chat.completions.create(model=MODEL, messages=image).id),
        "input_image": attempt(
            lambda: c.responses.create(
                model=MODEL, input=[{"role": "user", "content": [{"type": "input_image", "image_url": PNG}]}]
            ).id
        ),
        "tool_message": attempt(lambda: c.chat.completions.create(model=MODEL, messages=tool_message).id),
        "no_route": attempt(lambda: c.get("/no-such-route", cast_to=object)),
        # Over the test's 64 KiB body cap, on the shared pooled client: the answer says
        # `Connection: close`, so the next call on the same client opens a new connection.
        "too_large": attempt(
            lambda: c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 100_000}]).id
        ),
        "after_too_large": attempt(lambda: [m.id for m in c.models.list()]),
    }
    say({"sdk": {"name": "python", "version": openai.__version__}, "checks": checks})


def hold(route):
    c = client()
    out = {"route": route, "seen": []}
    base = c.responses.create(model=MODEL, input="a conversation to hold").id if route == "responses" else None
    say({"phase": "ready"})
    if command() != "go":
        raise SystemExit("expected go")
    if route == "chat":
        stream = c.chat.completions.create(model=MODEL, messages=USER, stream=True)
        text = lambda ev: ev.choices[0].delta.content if ev.choices else None  # noqa: E731
    else:
        stream = c.responses.create(model=MODEL, input="hold it", previous_response_id=base, stream=True)
        text = lambda ev: ev.delta if ev.type == "response.output_text.delta" else None  # noqa: E731
    events = iter(stream)
    for ev in events:
        out["seen"].append(getattr(ev, "type", "chunk"))
        if text(ev):
            break
    if base:
        out["busy"] = attempt(lambda: c.responses.create(model=MODEL, input="meanwhile", previous_response_id=base).id)
    say({"phase": "streaming"})
    cmd = command()
    if cmd == "close":
        stream.close()
        out["end"] = "closed"
    else:
        try:
            for ev in events:
                out["seen"].append(getattr(ev, "type", "chunk"))
            out["end"] = "finished"
        except Exception as e:  # noqa: BLE001
            out["end"] = {"raised": fault(e)}
        if command() != "next":
            raise SystemExit("expected next")
        out["next"] = attempt(lambda: chat_once(c))
    say(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["api"]:
        api()
    elif len(sys.argv) == 3 and sys.argv[1] == "hold":
        hold(sys.argv[2])
    else:
        raise SystemExit(__doc__)
