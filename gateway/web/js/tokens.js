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
 * The estimate against the smallest context among `models` ({display_name, context}):
 * {tokens, reserve, context, model, over}, or null without a model that names its context.
 * `reserve` is the answer's max tokens, which the context must hold too.
 */
export function checkContext(text, reserve, models) {
  const sized = models.filter((m) => m && Number.isFinite(m.context));
  if (!sized.length) return null;
  const smallest = sized.reduce((a, b) => (b.context < a.context ? b : a));
  const tokens = estimateTokens(text);
  return { tokens, reserve, context: smallest.context, model: smallest.display_name,
           over: tokens + reserve > smallest.context };
}
