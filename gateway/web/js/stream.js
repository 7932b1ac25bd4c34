// Streaming chat completions over fetch (Server-Sent Events), measured on the real stream.

/** Yields the data payload of each server-sent event of a fetch response, whatever the chunking. */
export async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** The message of an OpenAI-shaped error response, or a readable fallback. */
export async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

/**
 * POST a streaming chat completion and follow it. `onText(text, stats)` runs as text arrives.
 * Resolves (never rejects) to {status: "done"|"stopped"|"error", text, error, ttft, total, tokens, tps}:
 * ttft and total in seconds from the request; tps = tokens after the first / time after the first.
 * A hung model fails the answer: `deadline` (seconds without an event, the first included), or
 * `gone()` returning a message (the gateway took the model out of service).
 */
export async function streamCompletion(url, body, { signal, deadline = 0, gone = null, ...rest } = {}) {
  if (!deadline && !gone) return follow(url, body, { signal, ...rest });
  const inner = new AbortController();
  const abort = () => inner.abort();
  signal?.addEventListener("abort", abort, { once: true });
  const watch = { last: performance.now(), failure: null };
  const timer = setInterval(() => {
    const idle = (performance.now() - watch.last) / 1000;
    const why = (gone && gone())
      || (deadline && idle >= deadline
        ? `No answer for ${Math.floor(idle)} s: gave up waiting (the arena's answer deadline is ${deadline} s).` : null);
    if (why && !watch.failure) { watch.failure = why; inner.abort(); }
  }, 250);
  try {
    return await follow(url, body, { signal: inner.signal, watch, ...rest });
  } finally {
    clearInterval(timer);
    signal?.removeEventListener("abort", abort);
  }
}

async function follow(url, body, { signal, watch = null, headers = {}, onText = () => {}, onEvent = () => {} } = {}) {
  const started = performance.now();
  let first = null;
  let chunks = 0;
  let usageTokens = null;
  let text = "";
  let finish = null;
  const stats = () => {
    const now = performance.now();
    const tokens = usageTokens ?? chunks;
    return {
      ttft: first === null ? null : (first - started) / 1000,
      total: (now - started) / 1000,
      tokens,
      tps: first !== null && tokens > 1 && now > first ? (tokens - 1) / ((now - first) / 1000) : null,
    };
  };
  const result = (status, error = null) => ({ status, error, text, finishReason: finish, ...stats() });
  const failed = (e) => {
    if (watch && watch.failure) return result("error", watch.failure);
    return e && e.name === "AbortError" ? result("stopped") : result("error", `Connection lost: ${e && e.message}`);
  };

  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...headers },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    return failed(e);
  }
  if (!response.ok) return result("error", await errorMessage(response));
  try {
    for await (const data of sseData(response)) {
      if (watch) watch.last = performance.now();
      if (data.trim() === "[DONE]") return result(finish || text ? "done" : "error", finish || text ? null : "The model returned nothing.");
      let event;
      try { event = JSON.parse(data); } catch (_) { continue; }
      if (event.error) return result("error", event.error.message || "The model failed.");
      onEvent(event);
      if (event.usage && Number.isFinite(event.usage.completion_tokens)) usageTokens = event.usage.completion_tokens;
      for (const choice of event.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (typeof piece === "string" && piece) {
          if (first === null) first = performance.now();
          chunks += 1;
          text += piece;
          onText(text, stats());
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  } catch (e) {
    return failed(e);
  }
  return finish ? result("done") : result("error", "The stream ended before the answer was complete.");
}
