// The playground: one streamed chat completion with every sampling parameter the model service
// honours, its timings, and the same request as curl and as OpenAI SDK code.
import { $, api, authHeaders, AuthError, codeBox, initAdmin } from "./common.js";
import { streamCompletion } from "/static/arena/js/stream.js";

const NUMBERS = { max_tokens: "int", temperature: "float", top_p: "float", top_k: "int", min_p: "float",
                  repeat_penalty: "float", presence_penalty: "float", frequency_penalty: "float", seed: "int" };
const OPENAI_PARAMS = new Set(["max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"]);
let controller = null;

function requestBody() {
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
  messages.push({ role: "user", content: $("message").value });
  const body = { model: $("model").value, messages };
  for (const [name, kind] of Object.entries(NUMBERS)) {
    const raw = $(name).value.trim();
    if (raw !== "") body[name] = kind === "int" ? parseInt(raw, 10) : parseFloat(raw);
  }
  const stop = $("stop").value.split("\n").filter((s) => s !== "");
  if (stop.length) body.stop = stop;
  return body;
}

function pythonLiteral(value, indent = "") {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map((v) => pythonLiteral(v, indent)).join(", ")}]`;
  if (typeof value === "object") {
    const inner = `${indent}    `;
    return `{\n${Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pythonLiteral(v, inner)}`).join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}

function showCode(body) {
  const wire = { ...body, stream: true };
  const json = JSON.stringify(wire, null, 2).replace(/'/g, "'\\''");
  const base = `${location.origin}/v1`;
  const curl = `curl -N ${base}/chat/completions \\\n  -H "Authorization: Bearer $ARENA_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${json}'`;
  const { model, messages, ...params } = body;
  // The SDK takes OpenAI's own parameters as arguments; the service's others go in extra_body.
  const extra = Object.fromEntries(Object.entries(params).filter(([k]) => !OPENAI_PARAMS.has(k)));
  const args = [`    model=${JSON.stringify(model)},`, `    messages=${pythonLiteral(messages, "    ")},`,
    ...Object.entries(params).filter(([k]) => OPENAI_PARAMS.has(k)).map(([k, v]) => `    ${k}=${pythonLiteral(v, "    ")},`),
    ...(Object.keys(extra).length ? [`    extra_body=${pythonLiteral(extra, "    ")},`] : []), "    stream=True,"];
  const python = ["import os", "from openai import OpenAI", "",
    `client = OpenAI(base_url=${JSON.stringify(base)}, api_key=os.environ["ARENA_API_KEY"])`,
    "stream = client.chat.completions.create(", ...args, ")", "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    "        print(chunk.choices[0].delta.content, end=\"\", flush=True)", "print()"].join("\n");
  $("code-curl").replaceChildren(codeBox(curl));
  $("code-python").replaceChildren(codeBox(python));
}

const ms = (s) => (s === null || s === undefined ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

async function send(event) {
  event.preventDefault();
  const body = requestBody();
  showCode(body);
  $("answer").textContent = "";
  $("play-error").hidden = true;
  for (const id of ["t-ttft", "t-total", "t-tokens", "t-tps", "t-queue", "t-prompt", "t-prompt-tokens", "t-finish"]) $(id).textContent = "–";
  $("send").disabled = true;
  $("stop-button").disabled = false;
  $("answer").dataset.state = "streaming";
  controller = new AbortController();
  const wire = { ...body, stream: true, stream_options: { include_usage: true }, include_perf: true };
  const result = await streamCompletion("/v1/chat/completions", wire, {
    signal: controller.signal, headers: authHeaders(),
    onText: (text, stats) => {
      $("answer").textContent = text;
      $("t-ttft").textContent = ms(stats.ttft);
      $("t-tokens").textContent = String(stats.tokens);
    },
    onEvent: (chunk) => {
      if (chunk.perf) {
        $("t-queue").textContent = chunk.perf.queue_ms === null ? "–" : `${chunk.perf.queue_ms} ms`;
        $("t-prompt").textContent = chunk.perf.prompt_ms === null ? "–" : `${chunk.perf.prompt_ms} ms`;
      }
      if (chunk.usage) $("t-prompt-tokens").textContent = String(chunk.usage.prompt_tokens);
    },
  });
  $("answer").textContent = result.text;
  $("t-ttft").textContent = ms(result.ttft);
  $("t-total").textContent = ms(result.total);
  $("t-tokens").textContent = String(result.tokens);
  $("t-tps").textContent = result.tps === null ? "–" : result.tps.toFixed(1);
  $("t-finish").textContent = result.finishReason || result.status;
  if (result.error) { $("play-error").textContent = result.error; $("play-error").hidden = false; }
  $("answer").dataset.state = result.status;
  $("send").disabled = false;
  $("stop-button").disabled = true;
}

async function loadModels() {
  try {
    const models = await api("/v1/models");
    $("model").replaceChildren(...models.data.map((m) => new Option(m.id, m.id)));
    // The models served now (those with a ready instance); none: say where to start one.
    $("no-models").hidden = models.data.length > 0;
    $("send").disabled = !models.data.length;
    showCode(requestBody());
  } catch (e) {
    if (e instanceof AuthError) return;
    $("play-error").textContent = e.message;
    $("play-error").hidden = false;
  }
}

$("play-form").addEventListener("submit", send);
$("play-form").addEventListener("input", () => showCode(requestBody()));
$("stop-button").addEventListener("click", () => controller && controller.abort());
// At a later login the models are asked for again only when none were listed (the key was refused).
initAdmin(() => { if (!$("model").options.length) loadModels(); });
