// The official `openai` Node SDK, unmodified, against `warden serve`: the same calls and the same
// report as client.py (see its docstring for the modes and the hold protocol), so
// crates/warden-cli/tests/it/sdk.rs asserts on both with one set of checks.
//
//   node client.mjs api
//   node client.mjs hold chat|responses
//
// The test writes this file next to a node_modules link to the installed SDK
// (scripts/install-sdks.sh), so `openai` resolves as in any project.

import readline from 'node:readline';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const MODEL = process.env.WARDEN_SDK_MODEL;
const USER = [{ role: 'user', content: 'say hi' }];
const PNG = 'data:image/png;base64,iVBORw0KGgo=';

// No retries: every answer the test sees is the server's first.
const client = (opts = {}) => new OpenAI({ maxRetries: 0, timeout: 60_000, ...opts });

const say = (obj) => new Promise((done) => process.stdout.write(JSON.stringify(obj) + '\n', done));

const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function command() {
  const { value, done } = await stdin.next();
  if (done) throw new Error('stdin closed before the next command');
  return value.trim();
}

// What the SDK made of a failure.
function fault(e) {
  const out = { class: e?.constructor?.name, message: String(e?.message ?? e) };
  if (e instanceof OpenAI.APIError) {
    Object.assign(out, { code: e.code ?? null, param: e.param ?? null, type: e.type ?? null });
    if (e.status !== undefined) Object.assign(out, { status: e.status, request_id: e.requestID ?? null });
  }
  return out;
}

async function attempt(fn) {
  try {
    return { ok: await fn() };
  } catch (e) {
    return { raised: fault(e) };
  }
}

function usage(u) {
  if (!u) return null;
  if ('prompt_tokens' in u) return { input: u.prompt_tokens, output: u.completion_tokens, total: u.total_tokens };
  return { input: u.input_tokens, output: u.output_tokens, total: u.total_tokens };
}

async function chatOnce(c, messages = USER) {
  const r = await c.chat.completions.create({ model: MODEL, messages });
  const choice = r.choices[0];
  return {
    id: r.id,
    object: r.object,
    model: r.model,
    role: choice.message.role,
    content: choice.message.content,
    finish: choice.finish_reason,
    usage: usage(r.usage),
    request_id: r._request_id ?? null,
  };
}

// One chat chunk, as the SDK parsed it.
function chunk(c) {
  const d = c.choices.length ? c.choices[0].delta : null;
  return {
    id: c.id,
    model: c.model,
    choices: c.choices.length,
    role: d?.role ?? null,
    content: d?.content ?? null,
    finish: c.choices.length ? c.choices[0].finish_reason : null,
    usage: usage(c.usage),
  };
}

async function chatStream(c) {
  const s = await c.chat.completions.create({
    model: MODEL,
    messages: USER,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const x of s) chunks.push(chunk(x));
  return { chunks };
}

async function responsesOnce(c) {
  const r = await c.responses.create({ model: MODEL, input: 'say hi' });
  return { id: r.id, status: r.status, text: r.output_text, usage: usage(r.usage) };
}

async function responsesHelper(c) {
  const events = [];
  let text = '';
  const s = c.responses.stream({ model: MODEL, input: 'stream it' });
  for await (const ev of s) {
    const e = { type: ev.type, seq: ev.sequence_number };
    if (ev.type === 'response.output_text.delta') {
      text += ev.delta;
      Object.assign(e, { item_id: ev.item_id, output_index: ev.output_index, content_index: ev.content_index });
    }
    events.push(e);
  }
  const final = await s.finalResponse();
  return {
    events,
    text,
    final: { id: final.id, status: final.status, text: final.output_text, usage: usage(final.usage) },
  };
}

async function conversation(c) {
  const first = await c.responses.create({ model: MODEL, input: 'remember FIRST-node-TOKEN' });
  const second = await c.responses.create({
    model: MODEL,
    input: 'what did node say first?',
    previous_response_id: first.id,
  });
  const stale = await attempt(
    async () => (await c.responses.create({ model: MODEL, input: 'again', previous_response_id: first.id })).id,
  );
  return {
    first: first.id,
    second: second.id,
    status: second.status,
    text: second.output_text,
    previous: second.previous_response_id ?? null,
    stale,
  };
}

async function api() {
  const c = client();
  const tool = { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } };
  const image = [
    {
      role: 'user',
      content: [
        { type: 'text', text: 'what is it?' },
        { type: 'image_url', image_url: { url: PNG } },
      ],
    },
  ];
  const toolMessage = [...USER, { role: 'tool', tool_call_id: 'call_1', content: '42' }];
  const chatId = async (body) => (await c.chat.completions.create({ model: MODEL, messages: USER, ...body })).id;
  const checks = {
    models: await attempt(async () => {
      const ids = [];
      for await (const m of c.models.list()) ids.push(m.id);
      return { ids, one: (await c.models.retrieve(MODEL)).id };
    }),
    chat: await attempt(() => chatOnce(c, [{ role: 'system', content: 'be brief' }, ...USER])),
    chat_stream: await attempt(() => chatStream(c)),
    responses: await attempt(() => responsesOnce(c)),
    responses_stream: await attempt(() => responsesHelper(c)),
    conversation: await attempt(() => conversation(c)),
    unknown_previous: await attempt(
      async () =>
        (await c.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_unknown_0123' })).id,
    ),
    wrong_key: await attempt(() => chatOnce(client({ apiKey: process.env.WARDEN_SDK_WRONG_KEY }))),
    unknown_model: await attempt(() => chatId({ model: 'no-such-model' })),
    n: await attempt(() => chatId({ n: 2 })),
    tools: await attempt(() => chatId({ tools: [tool] })),
    image: await attempt(() => chatId({ messages: image })),
    input_image: await attempt(
      async () =>
        (
          await c.responses.create({
            model: MODEL,
            input: [{ role: 'user', content: [{ type: 'input_image', image_url: PNG, detail: 'auto' }] }],
          })
        ).id,
    ),
    tool_message: await attempt(() => chatId({ messages: toolMessage })),
    no_route: await attempt(() => c.get('/no-such-route')),
    // Over the test's 64 KiB body cap, on the shared pooled client; then another call on it.
    too_large: await attempt(async () => {
      const messages = [{ role: 'user', content: 'x'.repeat(100_000) }];
      return (await c.chat.completions.create({ model: MODEL, messages })).id;
    }),
    after_too_large: await attempt(async () => (await c.models.list()).data.map((m) => m.id)),
  };
  await say({ sdk: { name: 'node', version: VERSION, node: process.version }, checks });
}

async function hold(route) {
  const c = client();
  const out = { route, seen: [] };
  const base = route === 'responses' ? (await c.responses.create({ model: MODEL, input: 'a conversation to hold' })).id : null;
  await say({ phase: 'ready' });
  if ((await command()) !== 'go') throw new Error('expected go');
  let stream;
  let text;
  if (route === 'chat') {
    stream = await c.chat.completions.create({ model: MODEL, messages: USER, stream: true });
    text = (ev) => (ev.choices.length ? ev.choices[0].delta.content : null);
  } else {
    stream = await c.responses.create({ model: MODEL, input: 'hold it', previous_response_id: base, stream: true });
    text = (ev) => (ev.type === 'response.output_text.delta' ? ev.delta : null);
  }
  const events = stream[Symbol.asyncIterator]();
  for (;;) {
    const { value, done } = await events.next();
    if (done) break;
    out.seen.push(value.type ?? 'chunk');
    if (text(value)) break;
  }
  if (base) {
    out.busy = await attempt(
      async () => (await c.responses.create({ model: MODEL, input: 'meanwhile', previous_response_id: base })).id,
    );
  }
  await say({ phase: 'streaming' });
  if ((await command()) === 'close') {
    stream.controller.abort();
    out.end = 'closed';
  } else {
    try {
      for (;;) {
        const { value, done } = await events.next();
        if (done) break;
        out.seen.push(value.type ?? 'chunk');
      }
      out.end = 'finished';
    } catch (e) {
      out.end = { raised: fault(e) };
    }
    if ((await command()) !== 'next') throw new Error('expected next');
    out.next = await attempt(() => chatOnce(c));
  }
  await say(out);
}

const [mode, route] = process.argv.slice(2);
try {
  if (mode === 'api') await api();
  else if (mode === 'hold' && (route === 'chat' || route === 'responses')) await hold(route);
  else throw new Error('usage: client.mjs api | client.mjs hold chat|responses');
  process.exit(0);
} catch (e) {
  process.stderr.write(`client.mjs: ${e?.stack ?? e}\n`);
  process.exit(1);
}
