// A prompt's size in tokens, estimated in the browser (the exact count needs the model's own
// tokenizer, which a blind battle must not consult). English-like text runs about four
// characters a token; other scripts run closer to a token a character, so those count one each.
// It errs on the high side, which is the side a warning should err on.
export function estimateTokens(text) {
  let ascii = 0;
  let other = 0;
  for (const ch of text) {
    if (ch.charCodeAt(0) < 128) ascii += 1; else other += 1;
  }
  return Math.ceil(ascii / 4 + other);
}

/**
 * The estimate against the tightest of `models` ({display_name, context, max_tokens_limit}):
 * {tokens, reserve, context, model, over}, or null without a model that names its context.
 * `reserve` is the answer's max tokens (as each model takes it: at most its limit), which the
 * context must hold too.
 */
export function checkContext(text, maxTokens, models) {
  const sized = models.filter((m) => m && Number.isFinite(m.context));
  if (!sized.length) return null;
  const tokens = estimateTokens(text);
  const fits = sized.map((m) => {
    const reserve = Number.isFinite(m.max_tokens_limit) ? Math.min(maxTokens, m.max_tokens_limit) : maxTokens;
    return { tokens, reserve, context: m.context, model: m.display_name, room: m.context - tokens - reserve };
  });
  const tightest = fits.reduce((a, b) => (b.room < a.room ? b : a));
  return { ...tightest, over: tightest.room < 0 };
}
